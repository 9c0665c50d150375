package run_test

import (
	"context"
	"strings"
	"testing"

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
