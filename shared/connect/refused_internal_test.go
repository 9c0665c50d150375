package connect

import (
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
)

// TestRefusedShare: one process keeps the destination's whole limit of
// malformed requests; a Lambda share keeps one per as many windows as the
// shares split it, so 40 shares average 10 in 15 s. (Seen failing with
// the share given the whole limit: 40 shares, 400 in 15 s.)
func TestRefusedShare(t *testing.T) {
	t.Parallel()
	ortto := dest.Capabilities{MaxRefused: 10, RefusedPer: 15 * time.Second}
	for _, tt := range []struct {
		name          string
		budget, whole float64
		share         bool
		wantMax       int
		wantPer       time.Duration
	}{
		{"one process", 30, 30, false, 10, 15 * time.Second},
		{"40 shares", 0.75, 30, true, 1, 60 * time.Second},
		{"5 shares", 2, 10, true, 1, 15 * time.Second},
		{"unlimited budget", 0, 30, true, 10, 15 * time.Second},
	} {
		gotMax, gotPer := refusedShare(ortto, tt.budget, tt.whole, tt.share)
		if gotMax != tt.wantMax || gotPer != tt.wantPer {
			t.Errorf("%s: %d per %v, want %d per %v", tt.name, gotMax, gotPer, tt.wantMax, tt.wantPer)
		}
	}
}
