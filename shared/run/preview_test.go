package run_test

import (
	"context"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// TestEarlierValuesFindsTheProfileByItsHash: a contact sent with other
// values by several runs gets the values the snapshot's hash names, not
// those of the plan read first (the newest).
func TestEarlierValuesFindsTheProfileByItsHash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.NewFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	gold := segment.Profile{Email: "a@example.com", FirstName: "Ann", Custom: segment.Custom{{Key: "string--Tier", Value: "gold"}}}
	// e-2's plan, newer, is read first.
	plans(t, st, dir, map[string]string{"runs/e/e-1/plans/none/batches.jsonl": "gold", "runs/e/e-2/plans/a1/batches.jsonl": "silver"})
	got, err := run.EarlierValues(context.Background(), st, "e", map[string]string{"a@example.com": plan.Hash(gold)})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := got["a@example.com"].Custom.Get("string--Tier"); v != "gold" {
		t.Errorf("earlier values %+v; want the profile whose hash was asked for, tier gold", got)
	}
}

// plans writes a plan at each key sending a@example.com (first name Ann)
// at a tier, a day apart in the order of their keys.
func plans(t *testing.T, st store.ObjectStore, dir string, tiers map[string]string) {
	t.Helper()
	at := time.Now().Add(-72 * time.Hour)
	for _, key := range slices.Sorted(maps.Keys(tiers)) {
		line := `{"seq":1,"upserts":[{"row":1,"profile":{"email":"a@example.com","firstName":"Ann","custom":{"string--Tier":"` +
			tiers[key] + `"}}}]}` + "\n"
		if _, err := st.Put(context.Background(), key, strings.NewReader(line), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(key)), at, at); err != nil {
			t.Fatal(err)
		}
		at = at.Add(24 * time.Hour)
	}
}

// TestEarlierValuesReadsTheNewestPlansFirst: the values a snapshot's hash
// names are most often in the last runs' plans, and an export's history
// may be a year of them: they are read newest first, and no further once
// every email is found.
func TestEarlierValuesReadsTheNewestPlansFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	folder, err := store.NewFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Written oldest first, as the listing (by key) has them.
	plans(t, folder, dir, map[string]string{"runs/e/e-1/plans/none/batches.jsonl": "bronze",
		"runs/e/e-2/plans/none/batches.jsonl": "silver", "runs/e/e-3/plans/none/batches.jsonl": "gold"})
	st := &readsStore{ObjectStore: folder}
	gold := segment.Profile{Email: "a@example.com", FirstName: "Ann", Custom: segment.Custom{{Key: "string--Tier", Value: "gold"}}}
	got, err := run.EarlierValues(ctx, st, "e", map[string]string{"a@example.com": plan.Hash(gold)})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := got["a@example.com"].Custom.Get("string--Tier"); v != "gold" {
		t.Errorf("earlier values %+v; want tier gold", got)
	}
	if reads := st.reads(); len(reads) != 1 || reads[0] != "runs/e/e-3/plans/none/batches.jsonl" {
		t.Errorf("read %q; want only the newest plan, e-3's", reads)
	}
}

// readsStore records the keys read.
type readsStore struct {
	store.ObjectStore
	mu   sync.Mutex
	keys []string
}

func (s *readsStore) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	s.mu.Lock()
	s.keys = append(s.keys, key)
	s.mu.Unlock()
	return s.ObjectStore.Get(ctx, key)
}

func (s *readsStore) reads() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.keys...)
}
