package run

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/store"
)

// In Lambda each syncbatch container paces its own share of the budget and
// hears the others' 429s only through the run's throttle signal: what one
// container raises, another must see as a new version (pace.Signal). The
// pace tests use an in-memory Signal; this is the one the run wires in,
// over the local folder and over S3 (gofakes3, with the real SDK).
func TestThrottleSignalIsHeardByEveryShare(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		open func(t *testing.T) store.ObjectStore
	}{
		{"folder", func(t *testing.T) store.ObjectStore {
			st, err := store.NewFolder(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return st
		}},
		{"s3", func(t *testing.T) store.ObjectStore {
			srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
			t.Cleanup(srv.Close)
			client := awsx.NewS3Client(aws.Config{Region: "us-east-1",
				Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", "")}, srv.URL)
			if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("signal")}); err != nil {
				t.Fatal(err)
			}
			return s3store.New(client, "signal")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st := tc.open(t)
			// Two containers of one run; each raise is a nanosecond later.
			var tick atomic.Int64
			now := func() time.Time { return time.Unix(1_800_000_000, tick.Add(1)) }
			a := (&Service{Store: st, Now: now}).throttleSignal("weekly", "run-1", 1)
			b := (&Service{Store: st, Now: now}).throttleSignal("weekly", "run-1", 1)
			other := (&Service{Store: st, Now: now}).throttleSignal("weekly", "run-2", 1)

			version := func(s *throttleSignal) string {
				t.Helper()
				v, err := s.Version(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			if v := version(b); v != "" {
				t.Fatalf("version %q before any 429; want \"\" (never raised)", v)
			}
			var seen []string
			for i := range 3 {
				raised, err := a.Raise(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if raised == "" {
					t.Fatalf("raise %d returned no version", i+1)
				}
				for _, old := range seen {
					if raised == old {
						t.Fatalf("raise %d returned %q again: a share would not hear it", i+1, raised)
					}
				}
				seen = append(seen, raised)
				if got := version(b); got != raised {
					t.Fatalf("after raise %d the other container sees version %q, want %q: it does not hear the 429", i+1, got, raised)
				}
			}
			if v := version(other); v != "" {
				t.Errorf("another run's signal has version %q; its shares would slow for this run's 429s", v)
			}
		})
	}
}
