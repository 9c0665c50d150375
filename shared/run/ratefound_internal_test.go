package run

import (
	"testing"
	"time"
)

// TestRateFound: the report names the rate the destination accepted only
// when it also answered 429s, the run was long enough to tell, and the
// rate is well under the budget; the highest it took over 10 s, not over
// the whole run, which a slow start or a last worker alone read low.
// (Seen failing with the rate over the whole run: 6.2.)
func TestRateFound(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	// batches one second apart, each 10 requests of which throttled were 429s
	spans := func(n, throttled int) *timeline {
		tl := &timeline{}
		for i := range n {
			tl.add(BatchResult{StartedAt: start.Add(time.Duration(i) * time.Second), DurationMS: 1000,
				Requests: Requests{Total: 10, Throttled: throttled}})
		}
		return tl
	}
	tail := spans(30, 1) // then five, 5 s apart: a worker alone at the end
	for i := range 5 {
		tail.add(BatchResult{StartedAt: start.Add(time.Duration(30+5*i) * time.Second), DurationMS: 1000,
			Requests: Requests{Total: 10, Throttled: 1}})
	}
	tests := []struct {
		name      string
		tl        *timeline
		throttled int
		budget    float64
		want      float64
	}{
		{"429s, the API took a third of the budget", spans(30, 1), 30, 27, 9},
		{"429s, then a worker alone at the end", tail, 35, 27, 9},
		{"no 429s: the budget was never tested", spans(30, 0), 0, 27, 0},
		{"429s, but the API took about the budget", spans(30, 1), 30, 9.5, 0},
		{"too short to tell", spans(3, 1), 3, 27, 0},
		{"no batch sent", &timeline{}, 5, 27, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := rateFound(tt.tl, tt.throttled, tt.budget); got != tt.want {
				t.Fatalf("rateFound = %v, want %v", got, tt.want)
			}
		})
	}
}
