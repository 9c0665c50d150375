package split_test

import (
	"fmt"
	"testing"

	"github.com/segpilot/segpilot/shared/split"
)

func groups(shares ...int) []split.Group {
	out := make([]split.Group, len(shares))
	for i, s := range shares {
		out[i] = split.Group{Name: string(rune('a' + i)), Share: s}
	}
	return out
}

func TestNewSplitsByShare(t *testing.T) {
	t.Parallel()
	a, err := split.New("salt", groups(4500, 4500, 1000))
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for i := range 10000 {
		n[a.GroupOf(fmt.Appendf(nil, "p%d@example.com", i))]++
	}
	for g, want := range map[string]int{"a": 4500, "b": 4500, "c": 1000} {
		if d := n[g] - want; d < -150 || d > 150 {
			t.Errorf("group %s holds %d of 10,000, want %d ± 150", g, n[g], want)
		}
	}
}

// TestEvolveMovesTheFewest: only the buckets a shrinking group gives up
// change owner, however the shares move.
func TestEvolveMovesTheFewest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		from, to []split.Group
		moved    int
	}{
		{groups(4500, 4500, 1000), groups(4500, 4500, 1000), 0},
		{groups(4500, 4500, 1000), groups(4000, 5000, 1000), 500},
		{groups(3300, 3300, 3400), groups(5000, 2500, 2500), 1700}, // consecutive ranges would move 2600
		{groups(4500, 4500, 1000), groups(5000, 5000), 1000},       // c removed: its buckets shared out
		{groups(5000, 5000), groups(4000, 4000, 2000), 2000},       // c added
	}
	for _, tt := range tests {
		a, err := split.New("salt", tt.from)
		if err != nil {
			t.Fatal(err)
		}
		next, err := a.Evolve("salt", tt.to)
		if err != nil {
			t.Fatal(err)
		}
		held := map[byte]int{}
		for _, o := range next.Owner {
			held[o]++
		}
		for i, g := range tt.to {
			if held[byte(i)] != g.Share {
				t.Errorf("%v → %v: group %s holds %d buckets, want %d", tt.from, tt.to, g.Name, held[byte(i)], g.Share)
			}
		}
		if moved, pairs := split.Moves(a, next); moved != tt.moved {
			t.Errorf("%v → %v moved %d buckets (%v), want %d", tt.from, tt.to, moved, pairs, tt.moved)
		}
	}
}
