package e2e

import (
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/simkit"
)

func TestExportDeliversExactlyTheSegment(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
		data := generate(t, sample.Options{Rows: 1000, Seed: 3, Invalid: 97, Dupes: 50})
		res := h.drop("week1.csv", data)
		if len(res) != 1 || res[0].Status != run.StatusSucceeded {
			t.Fatalf("results %+v", res)
		}
		want := expected(t, data)
		h.assertState(want)
		rep := h.report(res[0])
		o := rep.Outcome
		if !o.Reconciles() || o.Sent != len(want) || o.Failed != 0 || !rep.SnapshotPromoted {
			t.Fatalf("report does not reconcile with the input: %+v", rep)
		}
		if o.Duplicates == 0 || o.Rejected == 0 {
			t.Fatalf("the sample has duplicates and invalid rows, report says %+v", o)
		}
		// Every request the destination saw is in the report, finding the
		// list (and, for Ortto, checking and creating its fields) included.
		if got := h.sim.Counters().Total; rep.Requests.Total != got {
			t.Fatalf("report counts %d requests, the destination received %d", rep.Requests.Total, got)
		}

		// Unchanged rerun (a new file with the same content): no contact requests.
		before := h.contactRequests()
		res = h.drop("week1-again.csv", data)
		if res[0].Status != run.StatusSucceeded || res[0].Counts.Unchanged != len(want) {
			t.Fatalf("rerun %+v", res[0])
		}
		if n := h.contactRequests() - before; n != 0 {
			t.Fatalf("unchanged rerun sent %d contact requests", n)
		}

		// The next week: changes, joiners and leavers go out, exactly.
		week2 := generate(t, sample.Options{Rows: 1000, Seed: 3, Invalid: 97, Dupes: 50, Changed: 20, Removed: 10, Added: 15})
		res = h.drop("week2.csv", week2)
		if res[0].Status != run.StatusSucceeded {
			t.Fatalf("week 2: %+v", res[0])
		}
		c := res[0].Counts
		if c.Changed == 0 || c.Removed == 0 || c.Added == 0 {
			t.Fatalf("week 2 should change, add and remove: %+v", c)
		}
		h.assertState(expected(t, week2))
		if o := h.report(res[0]).Outcome; o.Sent != c.Added+c.Changed || o.Removed != c.Removed || !o.Reconciles() {
			t.Fatalf("week 2 outcome %+v for plan %+v", o, c)
		}
	})
}

func TestDuplicateDeliveryStartsOneRun(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
		data := generate(t, sample.Options{Rows: 300, Seed: 9})
		first := h.drop("a.csv", data)
		upserts := h.sim.Counters().ByRoute[d.upsertRoute][200]
		for range 2 { // S3 delivers events at least once
			again := h.drop("a.csv", data)
			if again[0].RunID != first[0].RunID || again[0].Started {
				t.Fatalf("duplicate delivery: %+v, first %+v", again[0], first[0])
			}
		}
		if got := h.sim.Counters().ByRoute[d.upsertRoute][200]; got != upserts {
			t.Fatalf("duplicate deliveries sent %d more bulk upserts", got-upserts)
		}
	})
}

// TestRejectedByTheDestinationIsIsolatedAndReported: contacts the
// destination refuses (Autopilot: a 400 for their batch, which the client
// splits; Ortto: an error in their entry of the answer) are rejected
// alone, reported in rejected.csv, and the rest of their batch goes in.
func TestRejectedByTheDestinationIsIsolatedAndReported(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{Faults: simkit.Faults{RejectEmails: `^customer(7|77|177)@`}}, configYAML(d, "upsert", 100))
		data := generate(t, sample.Options{Rows: 250, Seed: 4})
		res := h.drop("a.csv", data)
		rep := h.report(res[0])
		if rep.Outcome.RejectedByAPI != 3 || rep.Outcome.Sent != 247 || !rep.Outcome.Reconciles() {
			t.Fatalf("outcome %+v", rep.Outcome)
		}
		want := expected(t, data)
		for _, e := range []string{"customer7@example.com", "customer77@example.com", "customer177@example.com"} {
			delete(want, e)
		}
		h.assertState(want)
		rejected := string(mustRead(t, h.dir+"/"+rep.Rejected))
		for _, e := range []string{"customer7@", "customer77@", "customer177@"} {
			if !strings.Contains(rejected, e) {
				t.Errorf("rejected.csv lacks %s:\n%s", e, rejected)
			}
		}
		if !strings.Contains(rejected, d.rejectedBy) {
			t.Errorf("rejected.csv does not say %q:\n%s", d.rejectedBy, rejected)
		}
	})
}

func TestConsentAndEnabledSwitchesSendNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, from, to string
	}{
		{"no consent", "consent: true", "consent: false"},
		{"disabled", "mode: upsert", "mode: upsert\n    enabled: false"},
	}
	d := destinations[0]
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, d, simOptions{}, strings.Replace(configYAML(d, "upsert", 100), tt.from, tt.to, 1))
			res := h.drop("a.csv", generate(t, sample.Options{Rows: 50, Seed: 1}))
			if res[0].Status != run.StatusRefused || res[0].Message == "" {
				t.Fatalf("result %+v", res[0])
			}
			if n := h.sim.Counters().Total; n != 0 {
				t.Fatalf("%d requests reached the destination", n)
			}
			if rep := h.report(res[0]); rep.Status != run.StatusRefused || rep.Message == "" {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}
