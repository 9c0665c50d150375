package plan

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/segment"
)

// naive is the obviously-correct in-memory plan the engine must agree with.
type naive struct {
	counts   Counts
	upserts  map[string]int // email -> row
	removals []string
	snapshot string
	rejected []string // rejected.csv lines, sorted: invalid rows and dropped duplicates
}

func naivePlan(rows []row, snapshot string, mode string) naive {
	n := naive{upserts: map[string]int{}}
	last := map[string]int{}
	for i, r := range rows {
		n.counts.Rows++
		if r.reason != "" {
			n.counts.Rejected++
			continue
		}
		n.counts.Valid++
		if _, ok := last[r.p.Email]; ok {
			n.counts.Duplicates++
		}
		last[r.p.Email] = i
	}
	n.counts.Unique = len(last)
	for i, r := range rows {
		switch {
		case r.reason != "":
			n.rejected = append(n.rejected, fmt.Sprintf("%d,%s,%s", i+1, r.p.Email, r.reason))
		case last[r.p.Email] != i:
			n.rejected = append(n.rejected, fmt.Sprintf("%d,%s,duplicate of row %d", i+1, r.p.Email, last[r.p.Email]+1))
		}
	}
	slices.Sort(n.rejected)
	prev := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(snapshot, "\n"), "\n") {
		if e, h, ok := strings.Cut(line, "\t"); ok {
			prev[e] = h
		}
	}
	n.counts.Previous = len(prev)
	var lines []string
	for e, i := range last {
		h := Hash(rows[i].p)
		switch old, ok := prev[e]; {
		case !ok:
			n.counts.Added++
			n.upserts[e] = i + 1
		case old != h:
			n.counts.Changed++
			n.upserts[e] = i + 1
		default:
			n.counts.Unchanged++
		}
		lines = append(lines, e+"\t"+h+"\n")
	}
	for e, h := range prev {
		if _, ok := last[e]; ok {
			continue
		}
		if mode == ModeMirror {
			n.counts.Removed++
			n.removals = append(n.removals, e)
		} else {
			lines = append(lines, e+"\t"+h+"\n")
		}
	}
	sort.Strings(n.removals)
	sort.Strings(lines)
	n.snapshot = strings.Join(lines, "")
	return n
}

func randomProfile(rng *rand.Rand, e string) segment.Profile {
	p := segment.Profile{Email: e}
	if rng.IntN(2) == 0 {
		p.FirstName = []string{"Ann", "Bo", "Zoë", `Q"uote`, "tab\there"}[rng.IntN(5)]
	}
	if rng.IntN(3) > 0 {
		p.Custom = segment.CustomOf(map[string]any{
			"integer--Orders":       int64(rng.IntN(3)),
			"float--Score":          []float64{0.5, 2, 1e21, -3.25}[rng.IntN(4)],
			"boolean--VIP":          rng.IntN(2) == 0,
			"string--Loyalty--Tier": []string{"gold", "silver"}[rng.IntN(2)],
		})
	}
	return p
}

func TestBuildMatchesNaive(t *testing.T) {
	t.Parallel()
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 7))
			emails := rng.IntN(300) + 1
			pick := func() string {
				// mixed lengths and shared prefixes stress the prefix compare
				i := rng.IntN(emails)
				return fmt.Sprintf("%s%d@example.com", strings.Repeat("a", i%11), i)
			}
			rows := make([]row, rng.IntN(600))
			for i := range rows {
				rows[i] = row{p: randomProfile(rng, pick())}
				if rng.IntN(20) == 0 {
					rows[i].reason = "invalid"
				}
			}
			var prev []string
			seen := map[string]bool{}
			for range rng.IntN(300) {
				e := pick()
				if seen[e] {
					continue
				}
				seen[e] = true
				h := Hash(randomProfile(rng, e))
				prev = append(prev, e+"\t"+h+"\n")
			}
			sort.Strings(prev)
			snapshot := strings.Join(prev, "")
			mode := []string{ModeUpsert, ModeMirror}[rng.IntN(2)]
			opts := Options{Mode: mode, MaxRemovalShare: 1, BatchSize: rng.IntN(100) + 1, ChunkRecords: rng.IntN(50) + 1}

			p, dir, err := build(t, rows, snapshot, opts)
			if err != nil {
				t.Fatal(err)
			}
			want := naivePlan(rows, snapshot, mode)
			if p.Counts != want.counts {
				t.Fatalf("counts\n got %+v\nwant %+v", p.Counts, want.counts)
			}
			r := readBack(t, dir, p, opts.BatchSize)
			if r.snapshot != want.snapshot {
				t.Errorf("snapshot differs from naive")
			}
			if !slices.Equal(r.removals, want.removals) {
				t.Errorf("removals %v, want %v", r.removals, want.removals)
			}
			got := map[string]int{}
			for _, u := range r.upserts {
				got[u.Profile.Email] = u.Row
			}
			if fmt.Sprint(got) != fmt.Sprint(want.upserts) {
				t.Errorf("upserts (email->row) differ:\n got %v\nwant %v", got, want.upserts)
			}
			gotRej := make([]string, len(r.rejected))
			for i, rec := range r.rejected {
				gotRej[i] = strings.Join(rec, ",")
			}
			slices.Sort(gotRej)
			if !slices.Equal(gotRej, want.rejected) {
				t.Errorf("rejected.csv lines\n got %q\nwant %q", gotRej, want.rejected)
			}
		})
	}
}
