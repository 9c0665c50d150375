package e2e

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/run"
)

// splitYAML is configYAML's export split into groups a and b (each to
// its own list) and a holdout, by the given percentages.
func splitYAML(d destination, mode string, a, b, holdout float64) string {
	base := configYAML(d, mode, 100)
	pct := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	return strings.Replace(base, "    list: "+listTitle+"\n", `    split:
      salt: spring
      groups:
        a: {percent: `+pct(a)+`, list: Test A}
        b: {percent: `+pct(b)+`, list: Test B}
        holdout: {percent: `+pct(holdout)+`}
`, 1)
}

// contactsCSV is a file of the contacts whose indexes ids holds.
func contactsCSV(ids []int) []byte {
	var b bytes.Buffer
	b.WriteString("EmailAddress,FirstName,LastName,LoyaltyTier,LifetimeOrders\n")
	for _, i := range ids {
		fmt.Fprintf(&b, "%s,F%d,L%d,gold,%d\n", sample.Email(i), i, i, i%50)
	}
	return b.Bytes()
}

// TestSplitGroupsAreStable: 10,000 contacts split 45/45/10 land within
// ±1.5 % of each share; through three runs with 2 % churn nobody changes
// group; moving to 40/50/10 moves at most 5.5 % of the contacts, and the
// reports say so.
func TestSplitGroupsAreStable(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, splitYAML(d, "mirror", 45, 45, 10))
		ids := make([]int, 0, 10000)
		for i := 1; i <= 10000; i++ {
			ids = append(ids, i)
		}
		groupOf := func() map[string]string {
			out := map[string]string{}
			for _, g := range []string{"Test A", "Test B"} {
				for _, e := range h.sim.membersOf(g) {
					if prev, twice := out[e]; twice {
						t.Fatalf("%s is on %s and %s", e, prev, g)
					}
					out[e] = g
				}
			}
			return out
		}
		runFile := func(name string, ids []int) []*run.Report {
			res := h.drop(name, contactsCSV(ids))
			if len(res) != 2 {
				t.Fatalf("%s: %d runs, want one per group with a list: %+v", name, len(res), res)
			}
			var reps []*run.Report
			for _, r := range res {
				rep := h.report(r)
				if rep.Status != run.StatusSucceeded || !rep.Outcome.Reconciles() || rep.Split == nil {
					t.Fatalf("%s, %s: %s (%s), outcome %+v, split %+v", name, r.Export, rep.Status, rep.Message, rep.Outcome, rep.Split)
				}
				reps = append(reps, rep)
			}
			return reps
		}

		reps := runFile("week1.csv", ids)
		groups := groupOf()
		n := map[string]int{}
		for _, g := range groups {
			n[g]++
		}
		n["holdout"] = len(ids) - len(groups)
		for g, want := range map[string]int{"Test A": 4500, "Test B": 4500, "holdout": 1000} {
			if diff := n[g] - want; diff < -150 || diff > 150 {
				t.Errorf("%s holds %d of 10,000, want %d ± 150 (1.5 %%)", g, n[g], want)
			}
		}
		for _, rep := range reps {
			if rep.Outcome.Rows != 10000 || rep.Outcome.OtherGroups != 10000-rep.Outcome.Sent {
				t.Errorf("%s: outcome %+v; want 10,000 rows, those not sent in other groups", rep.Export, rep.Outcome)
			}
		}

		// Three more weeks, each with 2 % of the segment replaced.
		for week := 2; week <= 4; week++ {
			ids = append(ids[200:], make([]int, 0, 200)...)
			for i := range 200 {
				ids = append(ids, 10000+(week-2)*200+i+1)
			}
			runFile(fmt.Sprintf("week%d.csv", week), ids)
			now := groupOf()
			for e, g := range now {
				if was, ok := groups[e]; ok && was != g {
					t.Fatalf("week %d: %s moved from %s to %s with the percentages unchanged", week, e, was, g)
				}
			}
			groups = now
		}

		// The percentages move: 40/50/10.
		h.put("config/exports.yaml", []byte(splitYAML(d, "mirror", 40, 50, 10)))
		reps = runFile("week5.csv", ids)
		now := groupOf()
		moved := 0
		for e, g := range now {
			if was, ok := groups[e]; ok && was != g {
				moved++
			}
		}
		t.Logf("groups %v, moved %d, split %+v", n, moved, reps[0].Split)
		if moved > 550 || moved == 0 {
			t.Errorf("moving to 40/50/10 moved %d of 10,000 contacts; want some, at most 550 (5.5 %%)", moved)
		}
		for _, rep := range reps {
			if !strings.Contains(rep.Split.LastChange, "a → b 5.00 %") {
				t.Errorf("%s: the report's split says %q; want the move a → b 5.00 %%", rep.Export, rep.Split.LastChange)
			}
			if strings.HasSuffix(rep.Export, ".a") && rep.Plan.MovedOut != moved {
				t.Errorf("group a's report: %d moved out, want the %d that moved", rep.Plan.MovedOut, moved)
			}
		}
	})
}
