package run

import (
	"reflect"
	"testing"
	"time"
)

func TestTimelineBuild(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)
	batch := func(startSec, durSec float64, requests, throttled, retries int) BatchResult {
		return BatchResult{StartedAt: t0.Add(time.Duration(startSec * float64(time.Second))),
			DurationMS: int64(durSec * 1000), Requests: Requests{Total: requests, Throttled: throttled, Retries: retries}}
	}
	tests := []struct {
		name    string
		batches []BatchResult
		total   time.Duration
		want    *Timeline
	}{
		{"no batches", nil, 10 * time.Second, nil},
		{"spread over the slots a batch spans; 429s where it ended",
			[]BatchResult{batch(0.5, 2, 4, 1, 1), batch(3, 0, 2, 0, 0)}, 4 * time.Second,
			&Timeline{Start: t0, SlotSeconds: 1, Slots: []TimelineSlot{{Requests: 1}, {Requests: 2}, {Requests: 1, Throttled: 1, Retries: 1}, {Requests: 2}}}},
		{"an earlier attempt's batch is left out; one without timings too",
			[]BatchResult{batch(-60, 2, 7, 0, 0), {Requests: Requests{Total: 3}}, batch(1, 0, 1, 0, 0)}, 2 * time.Second,
			&Timeline{Start: t0, SlotSeconds: 1, Slots: []TimelineSlot{{}, {Requests: 1}}}},
		{"a long run has at most MaxTimelineSlots slots of a round width",
			[]BatchResult{batch(0, 1000, 1000, 0, 0)}, 1000 * time.Second,
			&Timeline{Start: t0, SlotSeconds: 20, Slots: slots(50, TimelineSlot{Requests: 20})}},
		{"a batch past the end (clock skew) counts in the last slot",
			[]BatchResult{batch(5, 1, 3, 1, 0)}, 2 * time.Second,
			&Timeline{Start: t0, SlotSeconds: 1, Slots: []TimelineSlot{{}, {Requests: 3, Throttled: 1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tl timeline
			for _, b := range tt.batches {
				tl.add(b)
			}
			got := tl.build(t0, t0.Add(tt.total))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("build =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func slots(n int, s TimelineSlot) []TimelineSlot {
	out := make([]TimelineSlot, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestTimelineStaysBounded(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)
	for _, total := range []time.Duration{time.Millisecond, 59 * time.Second, 61 * time.Second, 7 * time.Hour, 30 * 24 * time.Hour} {
		tl := timeline{spans: []BatchResult{{StartedAt: t0, DurationMS: total.Milliseconds(), Requests: Requests{Total: 1}}}}
		got := tl.build(t0, t0.Add(total))
		if n := len(got.Slots); n < 1 || n > MaxTimelineSlots || got.SlotSeconds < 1 ||
			float64(n)*got.SlotSeconds < total.Seconds() {
			t.Errorf("%v: %d slots of %vs", total, n, got.SlotSeconds)
		}
	}
}

func TestPlainCSVCell(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"'=cmd@x.example": "=cmd@x.example",
		"'-a@x.example":   "-a@x.example",
		"'quoted":         "'quoted",
		"'":               "'",
		"a@x.example":     "a@x.example",
		"":                "",
	} {
		if got := plainCSVCell(in); got != want {
			t.Errorf("plainCSVCell(%q) = %q, want %q", in, got, want)
		}
	}
}
