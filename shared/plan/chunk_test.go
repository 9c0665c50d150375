package plan

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/segment"
)

// TestChunkSortMatchesComparisonSort checks the radix sort against a plain
// (email, row descending) sort, with emails that share long prefixes (ties on the
// 16-byte key), prefixes of each other, and repeats.
func TestChunkSortMatchesComparisonSort(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 11))
		stems := []string{"", "a", "customer", "customer.name.long", "customer.name.longer", "\xff", "z"}
		var c chunk
		var enc encoder
		type key struct {
			email string
			row   int
		}
		var want []key
		for row := range rng.IntN(3000) + 1 {
			email := fmt.Sprintf("%s%s%d@x.io", stems[rng.IntN(len(stems))], strings.Repeat("b", rng.IntN(20)), rng.IntN(50))
			r := segment.Record{Row: row + 1, Profile: segment.Profile{Email: email}}
			if err := c.add(&enc, &r); err != nil {
				t.Fatal(err)
			}
			want = append(want, key{email, row + 1})
		}
		c.sort()
		slices.SortFunc(want, func(a, b key) int {
			if d := strings.Compare(a.email, b.email); d != 0 {
				return d
			}
			return cmp.Compare(b.row, a.row)
		})
		if len(c.sorted) != len(want) {
			t.Fatalf("seed %d: %d sorted keys, want %d", seed, len(c.sorted), len(want))
		}
		for i, k := range c.sorted {
			e := &c.entries[k.idx]
			if !bytes.Equal(c.email(e), []byte(want[i].email)) || e.row != want[i].row {
				t.Fatalf("seed %d: position %d holds %q row %d, want %q row %d", seed, i, c.email(e), e.row, want[i].email, want[i].row)
			}
		}
	}
}

// TestBuildManySpillFiles plans with a spill file per record, more than one
// merge may read at once, and expects the same plan as with one chunk.
func TestBuildManySpillFiles(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 5))
	rows := make([]row, 2*maxRuns+50)
	for i := range rows {
		rows[i] = row{p: randomProfile(rng, fmt.Sprintf("u%d@example.com", rng.IntN(200)))}
	}
	opts := Options{Mode: ModeMirror, MaxRemovalShare: 1}
	want, wantDir, err := build(t, rows, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.ChunkRecords = 1
	got, gotDir, err := build(t, rows, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("plan differs:\n got %+v\nwant %+v", got, want)
	}
	for _, name := range []string{SnapshotFile, RejectedFile, BatchesFile} {
		a, aerr := os.ReadFile(filepath.Join(gotDir, name))
		b, berr := os.ReadFile(filepath.Join(wantDir, name))
		if aerr != nil || berr != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs (%v, %v)", name, aerr, berr)
		}
	}
}
