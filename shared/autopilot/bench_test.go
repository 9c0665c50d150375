package autopilot_test

import (
	"context"
	"math"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/autopilot"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
)

// BenchmarkSync100k pushes 100,000 contacts through the simulator at a
// budget of R requests/second (SEGPILOT_BENCH_RPS, default 20) with 8
// goroutines, and reports how close it gets to the floor of
// ceil(100000/100)/R seconds and the share of requests answered 429.
func BenchmarkSync100k(b *testing.B) {
	const total, goroutines = 100_000, 8
	rps := 20.0
	if v := os.Getenv("SEGPILOT_BENCH_RPS"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			b.Fatalf("SEGPILOT_BENCH_RPS=%q: want a positive number", v)
		}
		rps = r
	}
	burst := int(math.Ceil(rps))
	cs := contacts(total, "bench")
	floor := time.Duration(math.Ceil(total/100.0) / rps * float64(time.Second))

	for b.Loop() {
		s := sim.New(sim.Options{APIKey: simKey, RequestsPerSecond: rps, Burst: burst, RetryAfter: true})
		c, _ := simClient(b, s, autopilot.Options{RequestsPerSecond: rps, Burst: 1})
		start := time.Now()
		var wg sync.WaitGroup
		share := (total/100 + goroutines - 1) / goroutines * 100 // whole batches per goroutine
		for g := range goroutines {
			lo, hi := min(g*share, total), min((g+1)*share, total)
			wg.Go(func() {
				outs, err := c.UpsertContacts(context.Background(), "", cs[lo:hi])
				if err != nil {
					b.Errorf("goroutine %d: %v", g, err)
				}
				for _, o := range outs {
					if o.Status != autopilot.StatusSent {
						b.Errorf("goroutine %d: %s %s", g, o.Status, o.Reason)
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		cnt := s.Counters()
		if cnt.ContactsUpserted != total {
			b.Errorf("simulator applied %d contacts, want %d", cnt.ContactsUpserted, total)
		}
		b.ReportMetric(elapsed.Seconds()/floor.Seconds(), "elapsed/floor")
		b.ReportMetric(float64(cnt.ByStatus[429])/float64(cnt.Total), "429-share")
		b.ReportMetric(float64(cnt.Total), "requests")
	}
}
