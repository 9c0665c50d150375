package e2e

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/run"
)

// TestUpdateAndCreateModes: an update export changes only the people the
// destination has (a new address is reported skipped, never created), a
// create export adds only the people it lacks (one it has keeps every
// field), and neither ever removes. Autopilot cannot limit an upsert, so
// segpilot lists the account's contacts first and says what that cost;
// Ortto is told the mode (skip_non_existing, merge_strategy 3).
func TestUpdateAndCreateModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"update", "create"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			forEachDestination(t, func(t *testing.T, d destination) {
				week1 := generate(t, sample.Options{Rows: 400, Seed: 91, Invalid: 20, Dupes: 20})
				want := expected(t, week1)
				emails := slices.Sorted(maps.Keys(want))
				// Half the segment is in the destination already, on no
				// list, and so are people the segment does not hold.
				existing := map[string]bool{}
				for i, e := range emails {
					if i%2 == 0 {
						existing[e] = true
					}
				}
				outsiders := []string{"outsider1@example.org", "outsider2@example.org"}
				h := newHarness(t, d, simOptions{}, configYAML(d, mode, 100))
				for _, e := range append(slices.Sorted(maps.Keys(existing)), outsiders...) {
					if err := h.sim.seed(e, "Before"); err != nil {
						t.Fatal(err)
					}
				}
				res := h.drop("week1.csv", week1)
				rep := h.report(res[0])
				inMode := map[bool]int{true: len(existing), false: len(want) - len(existing)} // sent, skipped by has
				sent, skipped := inMode[mode == "update"], inMode[mode != "update"]
				if rep.Status != run.StatusSucceeded || rep.Outcome.Sent != sent || rep.Outcome.Skipped != skipped ||
					rep.Outcome.Removed != 0 || !rep.Outcome.Reconciles() {
					t.Fatalf("report %s (%s), outcome %+v; want %d sent, %d skipped, reconciled", rep.Status, rep.Message, rep.Outcome, sent, skipped)
				}
				if lookups := rep.Requests.Lookup; (d.kind == "autopilot") != (lookups > 0) {
					t.Errorf("%d requests listed the account's contacts; want some for Autopilot only", lookups)
				}
				reason := map[string]string{"update": "skipped: not in ", "create": "skipped: already in "}[mode]
				if n := h.reasonsIn(rep, reason); n != skipped {
					t.Errorf("rejected.csv: %d rows say %q, want %d", n, reason, skipped)
				}

				held := h.sim.holds()
				for _, e := range emails {
					c, ok := held[e]
					switch {
					case mode == "update" && !existing[e] && ok:
						t.Fatalf("%s was created by an update export", e)
					case mode == "update" && existing[e] && c.first != want[e].first:
						t.Fatalf("%s holds first name %q, want the file's %q", e, c.first, want[e].first)
					case mode == "create" && existing[e] && c.first != "Before":
						t.Fatalf("%s was changed by a create export: first name %q", e, c.first)
					case mode == "create" && !existing[e] && (!ok || c.first != want[e].first):
						t.Fatalf("%s holds %+v (there: %v), want it created from the file", e, c, ok)
					}
				}
				for _, o := range outsiders {
					if c := held[o]; c.first != "Before" {
						t.Fatalf("outsider %s changed: %+v", o, c)
					}
				}
				members := h.sim.members()
				wantMembers := map[bool][]string{}
				for _, e := range emails {
					wantMembers[existing[e] == (mode == "update")] = append(wantMembers[existing[e] == (mode == "update")], e)
				}
				if !slices.Equal(members, wantMembers[true]) {
					t.Fatalf("list has %d members, want the %d sent", len(members), len(wantMembers[true]))
				}

				// A week later half the segment has left: nobody is removed,
				// and the people skipped are looked at again, not taken for
				// sent.
				week2 := strings.Join(strings.Split(string(week1), "\n")[:200], "\n") + "\n"
				rep2 := h.report(h.drop("week2.csv", []byte(week2))[0])
				if rep2.Status != run.StatusSucceeded || rep2.Outcome.Removed != 0 || rep2.Plan.Removed != 0 || !rep2.Outcome.Reconciles() {
					t.Fatalf("week 2: %s, plan %+v, outcome %+v; want nothing removed", rep2.Status, rep2.Plan, rep2.Outcome)
				}
				if rep2.Outcome.Sent != 0 || rep2.Outcome.Skipped == 0 {
					t.Errorf("week 2: outcome %+v; want nothing sent again and the skipped ones skipped again", rep2.Outcome)
				}
				if got := h.sim.members(); !slices.Equal(got, members) {
					t.Errorf("week 2: list has %d members, had %d; want none removed", len(got), len(members))
				}
			})
		})
	}
}

// reasonsIn counts the rows of a run's rejected.csv whose reason starts
// with prefix.
func (h *harness) reasonsIn(rep *run.Report, prefix string) int {
	h.t.Helper()
	rc, _, err := h.p.Store.Get(context.Background(), rep.Rejected)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rc.Close()
	r := csv.NewReader(rc)
	n := 0
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			h.t.Fatal(err)
		}
		if strings.HasPrefix(rec[len(rec)-1], prefix) {
			n++
		}
	}
}
