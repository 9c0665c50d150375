package run_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/awsx/s3store"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// requestCounter counts the object-store requests made through it, by kind.
type requestCounter struct {
	store.ObjectStore
	puts, runPuts, gets atomic.Int64 // runPuts: under runs/
}

func (c *requestCounter) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	c.puts.Add(1)
	if strings.HasPrefix(key, "runs/") {
		c.runPuts.Add(1)
	}
	return c.ObjectStore.Put(ctx, key, body, opts)
}

func (c *requestCounter) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	c.gets.Add(1)
	return c.ObjectStore.Get(ctx, key)
}

func (c *requestCounter) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	c.gets.Add(1)
	return c.ObjectStore.GetRange(ctx, key, offset, length)
}

// BenchmarkIngestUpload is ingest's start of a run of a new
// 100,000-profile file against S3 (gofakes3 on loopback): read the file,
// plan, upload the plan, start the execution. It reports the object-store
// requests one start makes: puts/op (every PUT: the plan, the export's
// queue entry and lock) and plan-puts/op (those under runs/), which stay
// the same whatever the file's size: it runs at 1,000 and at 100,000
// profiles.
//
//	go test -run '^$' -bench '^BenchmarkIngestUpload$' -benchtime 3x ./shared/run
func BenchmarkIngestUpload(b *testing.B) {
	for _, profiles := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("profiles=%d", profiles), func(b *testing.B) { benchmarkIngestUpload(b, profiles) })
	}
}

func benchmarkIngestUpload(b *testing.B, profiles int) {
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	b.Cleanup(srv.Close)
	client := awsx.NewS3Client(aws.Config{Region: "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", "")}, srv.URL)
	const bucket = "segpilot-bench"
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		b.Fatal(err)
	}
	raw := s3store.New(client, bucket, s3store.WithTempDir(b.TempDir()))
	counter := &requestCounter{ObjectStore: raw}
	starter := &fakeCloud{}
	now := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	svc := &run.Service{Store: counter, Starter: starter, Liveness: starter, TempDir: b.TempDir(), Now: func() time.Time { return now },
		Connect: func(context.Context, config.Connection, run.Share) (run.Destination, error) { return listOnly{}, nil }}
	cfg := strings.Replace(queueConfig, "      email: Email\n", `      email: EmailAddress
      firstName: FirstName
      lastName: LastName
      custom:
        LoyaltyTier: string--Loyalty--Tier
        LifetimeOrders: integer--Lifetime--Orders
`, 1)
	if _, err := raw.Put(context.Background(), run.ConfigKey, strings.NewReader(cfg), store.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	var data bytes.Buffer
	if _, err := sample.Write(&data, sample.Options{Rows: profiles, Seed: 7}); err != nil {
		b.Fatal(err)
	}

	var puts, runPuts, gets, batches int64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		// A new file each time; the last run is closed first, so the export
		// is free (untimed, uncounted).
		if i > 0 {
			ex := starter.started[len(starter.started)-1]
			if _, err := svc.Finalize(context.Background(), finalizeInput(ex)); err != nil {
				b.Fatal(err)
			}
		}
		key := fmt.Sprintf("segments/vip/file-%d.csv", i)
		info, err := raw.Put(context.Background(), key, bytes.NewReader(data.Bytes()), store.PutOptions{})
		if err != nil {
			b.Fatal(err)
		}
		now = now.Add(time.Minute)
		p0, r0, g0 := counter.puts.Load(), counter.runPuts.Load(), counter.gets.Load()
		b.StartTimer()
		res, err := svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3,
			Source: run.Source{Key: key, ETag: info.ETag, Size: int64(data.Len())}, Arrived: now})
		if err != nil || len(res) != 1 || res[0].Status != run.StatusRunning {
			b.Fatalf("start %d: %+v, %v", i, res, err)
		}
		b.StopTimer()
		puts += counter.puts.Load() - p0
		runPuts += counter.runPuts.Load() - r0
		gets += counter.gets.Load() - g0
		ex := starter.started[len(starter.started)-1]
		batches += int64(len(itemsOf(b, raw, ex)))
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(puts)/n, "puts/op")
	b.ReportMetric(float64(runPuts)/n, "plan-puts/op")
	b.ReportMetric(float64(gets)/n, "gets/op")
	b.ReportMetric(float64(batches)/n, "batches/op")
}

func itemsOf(b *testing.B, st store.ObjectStore, ex run.Execution) []run.Item {
	b.Helper()
	var items []run.Item
	rc, _, err := st.Get(context.Background(), ex.ItemsKey)
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	if err := json.NewDecoder(rc).Decode(&items); err != nil {
		b.Fatal(err)
	}
	return items
}
