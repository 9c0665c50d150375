package run

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/store"
)

// groupsEnding is a run's last wave: a Map's children at most.
const groupsEnding = 40

// In Lambda each syncbatch container paces its own share of the budget and
// hears the others' 429s only through the run's throttle signal: what one
// container writes (the rate they pace at), another must read (pace.Signal). The
// pace tests use an in-memory Signal; this is the one the run wires in,
// over the local folder and over S3 (gofakes3, with the real SDK). The
// groups finished are counted exactly, though they end together and cuts
// are written meanwhile. (Seen failing with a plain read and write: 2 and
// 5 of 40 counted.)
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
			a := (&Service{Store: st}).throttleSignal("weekly", "run-1", 1)
			b := (&Service{Store: st}).throttleSignal("weekly", "run-1", 1)
			other := (&Service{Store: st}).throttleSignal("weekly", "run-2", 1)

			read := func(s *throttleSignal) pace.ShareState {
				t.Helper()
				st, err := s.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			if st := read(b); st != (pace.ShareState{}) {
				t.Fatalf("state %+v before any 429; want the zero state (never cut)", st)
			}
			at := time.Unix(1_800_000_000, 0).UTC()
			for i := range 3 {
				want := pace.ShareState{Rate: 0.8 - 0.1*float64(i), At: at.Add(time.Duration(i) * time.Second), Found: 0.5, Throttled: i}
				if _, err := a.Update(ctx, func(pace.ShareState) (pace.ShareState, bool) { return want, true }); err != nil {
					t.Fatal(err)
				}
				if got := read(b); !got.At.Equal(want.At) || got.Rate != want.Rate || got.Found != want.Found || got.Throttled != want.Throttled {
					t.Fatalf("after write %d the other container reads %+v, want %+v: it does not pace with the others", i+1, got, want)
				}
			}
			if st := read(other); st != (pace.ShareState{}) {
				t.Errorf("another run's signal holds %+v; its shares would slow for this run's 429s", st)
			}

			// The run's last wave: its groups end together, each counting
			// itself, while shares count a 429 each, some of them
			// cutting (a cut knows of fewer groups).
			var wg sync.WaitGroup
			for i := range groupsEnding {
				wg.Go(func() {
					a.groupDone(ctx)
					_, err := b.Update(ctx, func(cur pace.ShareState) (pace.ShareState, bool) {
						if i%10 == 0 {
							return pace.ShareState{Rate: 0.3, At: at.Add(time.Minute), Refused: cur.Refused + 1}, true
						}
						cur.Refused++
						return cur, true
					})
					if err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if got := read(b); got.Done != groupsEnding || got.Refused != groupsEnding || got.Rate != 0.3 {
				t.Fatalf("after %d groups ended together, each with a 429, beside cuts: %+v; want every group and every 429 counted once, and the cut", groupsEnding, got)
			}
		})
	}
}
