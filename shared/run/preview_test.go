package run_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
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
// whichever plan is read last.
func TestEarlierValuesFindsTheProfileByItsHash(t *testing.T) {
	t.Parallel()
	st, err := store.NewFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gold := segment.Profile{Email: "a@example.com", FirstName: "Ann", Custom: segment.Custom{{Key: "string--Tier", Value: "gold"}}}
	silver := gold
	silver.Custom = segment.Custom{{Key: "string--Tier", Value: "silver"}}
	for key, p := range map[string]segment.Profile{
		"runs/e/e-1/plans/none/batches.jsonl": gold,
		"runs/e/e-2/plans/a1/batches.jsonl":   silver, // read after e-1's
	} {
		line := `{"seq":1,"upserts":[{"row":1,"profile":{"email":"a@example.com","firstName":"Ann","custom":{"string--Tier":"` +
			p.Custom[0].Value.(string) + `"}}}]}` + "\n"
		if _, err := st.Put(context.Background(), key, strings.NewReader(line), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := run.EarlierValues(context.Background(), st, "e", map[string]string{"a@example.com": plan.Hash(gold)})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := got["a@example.com"].Custom.Get("string--Tier"); v != "gold" {
		t.Errorf("earlier values %+v; want the profile whose hash was asked for, tier gold", got)
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
	start := time.Now().Add(-72 * time.Hour)
	// Written oldest first, as the listing (by key) has them.
	for i, tier := range []string{"bronze", "silver", "gold"} {
		key := "runs/e/e-" + string(rune('1'+i)) + "/plans/none/batches.jsonl"
		line := `{"seq":1,"upserts":[{"row":1,"profile":{"email":"a@example.com","custom":{"string--Tier":"` + tier + `"}}}]}` + "\n"
		if _, err := folder.Put(ctx, key, strings.NewReader(line), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		at := start.Add(time.Duration(i) * 24 * time.Hour)
		if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(key)), at, at); err != nil {
			t.Fatal(err)
		}
	}
	st := &readsStore{ObjectStore: folder}
	gold := segment.Profile{Email: "a@example.com", Custom: segment.Custom{{Key: "string--Tier", Value: "gold"}}}
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
