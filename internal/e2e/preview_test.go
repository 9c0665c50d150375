package e2e

import (
	"context"
	"encoding/csv"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
)

// TestDryRunPreview: a dry run's preview.csv says what the run would do
// to each contact, and for a change which fields change, from what to
// what; nothing is sent.
func TestDryRunPreview(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
		h.drop("week1.csv", segmentCSV(1, 100, gold))
		h.sim.ResetCounters()

		week2 := string(segmentCSV(2, 101, func(i int) string { return map[bool]string{true: "platinum", false: "gold"}[i == 5] })) +
			"not-an-email,X,Y,gold,1\n" + strings.ToUpper(sample.Email(7)) + ",F7,L7,gold,7\n"
		info := h.put("segments/vip-customers/week2.csv", []byte(week2))
		res, err := h.p.Service.Start(context.Background(), run.StartRequest{Trigger: run.TriggerManual, DryRun: true,
			Source: run.Source{Key: "segments/vip-customers/week2.csv", ETag: info.ETag, Size: info.Size}})
		if err != nil || len(res) != 1 || res[0].Status != run.StatusDryRun || res[0].Preview == "" {
			t.Fatalf("dry run: %+v, %v", res, err)
		}
		if n := h.contactRequests(); n != 0 {
			t.Errorf("a dry run sent %d contact requests", n)
		}
		rc, _, err := h.p.Store.Get(context.Background(), res[0].Preview)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		rows, err := csv.NewReader(rc).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		byEmail, actions := map[string][]string{}, map[string]int{}
		for _, r := range rows[1:] {
			byEmail[r[1]] = r
			actions[r[2]]++
		}
		want := map[string]int{plan.ActionUnchanged: 98, plan.ActionChange: 1, plan.ActionAdd: 1, plan.ActionRemove: 1, plan.ActionRejected: 1, plan.ActionDuplicate: 1}
		for a, n := range want {
			if actions[a] != n {
				t.Errorf("preview: %d %q, want %d (all: %v)", actions[a], a, n, actions)
			}
		}
		wantFields := d.custom["LoyaltyTier"] + ": gold → platinum"
		if r := byEmail[sample.Email(5)]; r == nil || r[2] != plan.ActionChange || r[3] != wantFields {
			t.Errorf("the changed contact's preview: %q; want a change of %q", r, wantFields)
		}
		if r := byEmail[sample.Email(1)]; r == nil || r[2] != plan.ActionRemove || r[0] != "" {
			t.Errorf("the leaver's preview: %q; want remove, no row", r)
		}
		if r := byEmail[sample.Email(101)]; r == nil || r[2] != plan.ActionAdd || r[0] != "100" {
			t.Errorf("the newcomer's preview: %q; want add, row 100", r)
		}
	})
}
