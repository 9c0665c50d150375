package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
)

// segmentCSV is a file of contacts from..to; tierOf says each one's tier.
func segmentCSV(from, to int, tierOf func(i int) string) []byte {
	var b bytes.Buffer
	b.WriteString("EmailAddress,FirstName,LastName,LoyaltyTier,LifetimeOrders\n")
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "%s,F%d,L%d,%s,%d\n", sample.Email(i), i, i, tierOf(i), i%50)
	}
	return b.Bytes()
}

func gold(int) string { return "gold" }

// undo asks for the undo of runID and waits for it to end.
func (h *harness) undo(runID string) (run.Result, *run.Report) {
	h.t.Helper()
	res, err := h.p.Service.Undo(context.Background(), run.UndoRequest{Trigger: run.TriggerManual, Run: runID})
	if err == nil {
		var all []run.Result
		all, err = awaitResults(context.Background(), h.p.Service, []run.Result{res})
		res = all[0]
	}
	if err != nil {
		h.t.Fatalf("undo %s: %v", runID, err)
	}
	return res, h.report(res)
}

// undoActions counts an undo's undo.csv rows by action.
func (h *harness) undoActions(rep *run.Report) map[string]int {
	h.t.Helper()
	rc, _, err := h.p.Store.Get(context.Background(), rep.Undo.CSV)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rc.Close()
	rows, err := csv.NewReader(rc).ReadAll()
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rows[1:] {
		out[r[2]]++
	}
	return out
}

// TestUndoAnUpsertRun: a run that added 500 contacts and changed 200 is
// undone: the list holds exactly what it held before the run, the 200
// hold their earlier values again, someone who unsubscribed in between
// stays unsubscribed, nobody is deleted. The undone file is not sent
// again by itself; a corrected one is planned against the earlier state.
func TestUndoAnUpsertRun(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
		h.drop("week1.csv", segmentCSV(1, 1000, gold))
		before, members := h.sim.holds(), h.sim.members()
		optedOut := sample.Email(7) // one the run changes
		if err := h.sim.optOut(optedOut); err != nil {
			t.Fatal(err)
		}
		week2 := segmentCSV(1, 1500, func(i int) string { return map[bool]string{true: "platinum", false: "gold"}[i <= 200] })
		res := h.drop("week2.csv", week2)
		rep := h.report(res[0])
		if rep.Status != run.StatusSucceeded || rep.Plan.Added != 500 || rep.Plan.Changed != 200 {
			t.Fatalf("week 2: %s, plan %+v; want 500 added, 200 changed", rep.Status, rep.Plan)
		}

		_, urep := h.undo(res[0].RunID)
		if urep.Status != run.StatusSucceeded || urep.Undo == nil || urep.Undo.Of != res[0].RunID || !urep.Outcome.Reconciles() {
			t.Fatalf("undo: %s (%s), undo %+v, outcome %+v", urep.Status, urep.Message, urep.Undo, urep.Outcome)
		}
		want := plan.UndoCounts{TakeOff: 500, Restore: 200}
		if urep.Undo.Counts != want || urep.Outcome.Removed != 500 || urep.Outcome.Sent != 200 {
			t.Errorf("undo counts %+v, outcome %+v; want %+v, 500 removed, 200 sent", urep.Undo.Counts, urep.Outcome, want)
		}
		if got := h.undoActions(urep); got[plan.UndoTakeOff] != 500 || got[plan.UndoRestore] != 200 || len(got) != 2 {
			t.Errorf("undo.csv actions %v", got)
		}
		if got := h.sim.members(); !slices.Equal(got, members) {
			t.Errorf("after the undo the list has %d members, want the %d from before the run", len(got), len(members))
		}
		now := h.sim.holds()
		for e, was := range before {
			c := now[e]
			c.subscribed, was.subscribed = true, true
			if c != was {
				t.Fatalf("%s holds %+v after the undo, want %+v", e, now[e], before[e])
			}
		}
		if now[optedOut].subscribed {
			t.Errorf("%s unsubscribed before the run and is subscribed after the undo", optedOut)
		}
		for i := 1001; i <= 1500; i++ {
			if _, ok := now[sample.Email(i)]; !ok {
				t.Fatalf("%s, added by the run, was deleted by the undo; want it only off the list", sample.Email(i))
			}
		}

		// Undone once: asking again does nothing.
		if again, _ := h.undo(res[0].RunID); again.Status != run.StatusUpToDate {
			t.Errorf("undoing it again: %s (%s), want %s", again.Status, again.Message, run.StatusUpToDate)
		}
		// The undone file is not sent again by itself (the schedule picks
		// the newest file); a corrected one is planned against the state
		// from before the run: only its new contacts are sent.
		if again := h.drop("week2.csv", week2)[0]; again.Status != run.StatusUpToDate || !strings.Contains(again.Message, "undone") {
			t.Errorf("week 2 again after its undo: %s (%s); want it not sent, saying it was undone", again.Status, again.Message)
		}
		res3 := h.drop("week2-corrected.csv", segmentCSV(1, 1500, gold))[0]
		rep3 := h.report(res3)
		if res3.Status != run.StatusSucceeded || rep3.Base != urep.Snapshot || rep3.Plan.Added != 500 || rep3.Plan.Changed != 0 || rep3.Outcome.Sent != 500 {
			t.Errorf("the corrected week 2: %s (%s) against %s, plan %+v, outcome %+v; want its 500 new contacts sent, against the undo's snapshot",
				res3.Status, res3.Message, rep3.Base, rep3.Plan, rep3.Outcome)
		}
	})
}

// TestUndoAMirrorRun: the 300 contacts a mirror run took off are put back,
// with their fields as they were, and one who unsubscribed stays so.
func TestUndoAMirrorRun(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
		h.drop("week1.csv", segmentCSV(1, 2000, gold))
		before, members := h.sim.holds(), h.sim.members()
		optedOut := sample.Email(1950) // one the run takes off
		if err := h.sim.optOut(optedOut); err != nil {
			t.Fatal(err)
		}
		res := h.drop("week2.csv", segmentCSV(1, 1700, gold))
		if rep := h.report(res[0]); rep.Status != run.StatusSucceeded || rep.Outcome.Removed != 300 {
			t.Fatalf("week 2: %s (%s), outcome %+v; want 300 removed", rep.Status, rep.Message, rep.Outcome)
		}
		// Someone deletes one of them in between: an undo never creates
		// (so never subscribes) anyone.
		deleted := sample.Email(1990)
		if err := h.sim.forget(deleted); err != nil {
			t.Fatal(err)
		}
		_, urep := h.undo(res[0].RunID)
		if urep.Status != run.StatusSucceeded || urep.Undo.Counts != (plan.UndoCounts{PutBack: 300}) || urep.Outcome.Sent != 299 ||
			urep.Outcome.Skipped != 1 || !urep.Outcome.Reconciles() {
			t.Fatalf("undo: %s (%s), counts %+v, outcome %+v; want 300 put back: 299 sent, 1 skipped", urep.Status, urep.Message, urep.Undo.Counts, urep.Outcome)
		}
		if n := h.reasonsIn(urep, "skipped: not in "); n != 1 {
			t.Errorf("rejected.csv: %d rows say the deleted contact was skipped, want 1", n)
		}
		members = slices.DeleteFunc(members, func(e string) bool { return e == deleted })
		delete(before, deleted)
		if _, ok := h.sim.holds()[deleted]; ok {
			t.Errorf("%s, deleted before the undo, was created again by it", deleted)
		}
		if got := h.sim.members(); !slices.Equal(got, members) {
			t.Errorf("after the undo the list has %d members, want the %d from before the run", len(got), len(members))
		}
		now := h.sim.holds()
		if now[optedOut].subscribed {
			t.Errorf("%s unsubscribed, was taken off and put back: subscribed again", optedOut)
		}
		for _, e := range slices.Sorted(maps.Keys(before)) {
			c, was := now[e], before[e]
			c.subscribed, was.subscribed = true, true
			if c != was {
				t.Fatalf("%s holds %+v after the undo, want %+v", e, now[e], before[e])
			}
		}
	})
}

// TestUndoRefusesARunBuiltOn: a run with a later run after it is not
// undone (the later one first), and then it is.
func TestUndoRefusesARunBuiltOn(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
		h.drop("week1.csv", segmentCSV(1, 100, gold))
		members := h.sim.members()
		run2 := h.drop("week2.csv", segmentCSV(1, 150, gold))[0].RunID
		run3 := h.drop("week3.csv", segmentCSV(1, 200, func(int) string { return "silver" }))[0].RunID

		res, rep := h.undo(run2)
		if res.Status != run.StatusRefused || !strings.Contains(rep.Message, "undo "+run3+" first") {
			t.Fatalf("undoing %s under %s: %s (%s); want refused, naming %s", run2, run3, res.Status, rep.Message, run3)
		}
		if _, rep := h.undo(run3); rep.Status != run.StatusSucceeded {
			t.Fatalf("undoing %s: %s (%s)", run3, rep.Status, rep.Message)
		}
		undo2, rep := h.undo(run2)
		if rep.Status != run.StatusSucceeded {
			t.Fatalf("then undoing %s: %s (%s)", run2, rep.Status, rep.Message)
		}
		// Undoing that undo applies week 2 again; then week 2 can be
		// undone again.
		if _, rep := h.undo(undo2.RunID); rep.Status != run.StatusSucceeded || len(h.sim.members()) != 150 {
			t.Fatalf("undoing the undo %s: %s (%s), %d members; want week 2's 150", undo2.RunID, rep.Status, rep.Message, len(h.sim.members()))
		}
		if again, rep := h.undo(run2); again.Status != run.StatusSucceeded || rep.Attempt <= undo2.Attempt {
			t.Fatalf("undoing %s again after its undo was undone: %s (%s)", run2, again.Status, again.Message)
		}
		if got := h.sim.members(); !slices.Equal(got, members) {
			t.Errorf("after both undos the list has %d members, want week 1's %d", len(got), len(members))
		}
		for e, c := range h.sim.holds() {
			if slices.Contains(members, e) && c.tier != "gold" {
				t.Fatalf("%s holds tier %q after both undos, want gold", e, c.tier)
			}
		}
	})
}
