package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runner"
)

// csvRange is a segment of profiles from..to (sample emails), with one
// loyalty tier for all of them.
func csvRange(from, to int, tier string) []byte {
	var b bytes.Buffer
	b.WriteString("EmailAddress,FirstName,LastName,LoyaltyTier,LifetimeOrders\n")
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "%s,F%d,L%d,%s,%d\n", sample.Email(i), i, i, tier, i%50)
	}
	return b.Bytes()
}

// TestOnePercentChangeSendsExactlyThoseContacts checks the delta against
// the generator's ground truth and against what Autopilot received, never
// against the planner's own counts: a planner that resent unchanged
// profiles and counted them as changed must fail here.
func TestOnePercentChangeSendsExactlyThoseContacts(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testOnePercentChange)
}

func testOnePercentChange(t *testing.T, d destination) {
	h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
	h.drop("week1.csv", generate(t, sample.Options{Rows: 10000, Seed: 11}))
	week2 := sample.Options{Rows: 10000, Seed: 11, Changed: 10}
	truth := sample.DeltaOf(week2)
	if len(truth.Changed) < 50 || len(truth.Removed)+len(truth.Added) != 0 {
		t.Fatalf("generator: %d changed, %d removed, %d added; want about 1 %% changed, nothing else",
			len(truth.Changed), len(truth.Removed), len(truth.Added))
	}
	h.sim.ResetCounters()
	res := h.drop("week2.csv", generate(t, week2))

	if c := res[0].Counts; c.Changed != len(truth.Changed) || c.Unchanged != 10000-len(truth.Changed) || c.Added != 0 || c.Removed != 0 {
		t.Errorf("plan %+v; the generator changed %d of 10000 and nothing else", c, len(truth.Changed))
	}
	got := h.sim.Upserted()
	for _, e := range truth.Changed {
		if got[e] != 1 {
			t.Errorf("changed contact %s upserted %d times, want once", e, got[e])
		}
		delete(got, e)
	}
	if len(got) != 0 {
		t.Errorf("%d unchanged contacts were upserted too, e.g. %v", len(got), firstKeys(got, 3))
	}
	calls := h.sim.Counters().ByRoute[d.upsertRoute][200]
	if wantCalls := (len(truth.Changed) + 99) / 100; calls != wantCalls || h.contactRequests() != calls {
		t.Errorf("%d contact requests, %d of them bulk upserts; want only ceil(%d/100) = %d bulk upserts",
			h.contactRequests(), calls, len(truth.Changed), wantCalls)
	}
}

// TestMirrorTakesOffOnlyItsOwnLeavers: a mirror export removes only the
// contacts it put there (the tracked set, its snapshot), never someone put
// on the list (Autopilot) or given the tag (Ortto) by hand.
func TestMirrorTakesOffOnlyItsOwnLeavers(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testMirrorOwnLeavers)
}

func testMirrorOwnLeavers(t *testing.T, d destination) {
	h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
	h.drop("a.csv", csvRange(1, 10000, "gold"))
	const outsider = "joined-by-hand@example.com"
	if err := h.sim.addOutsider(outsider); err != nil {
		t.Fatal(err)
	}
	res := h.drop("b.csv", csvRange(301, 10000, "gold")) // 300 leave
	if res[0].Status != run.StatusSucceeded || res[0].Counts.Removed != 300 {
		t.Fatalf("result %+v", res[0])
	}
	want := map[string]bool{outsider: true}
	for i := 301; i <= 10000; i++ {
		want[sample.Email(i)] = true
	}
	members := h.sim.members()
	if len(members) != len(want) {
		t.Fatalf("list has %d members, want %d", len(members), len(want))
	}
	for _, m := range members {
		if !want[m] {
			t.Fatalf("%s is still on the list", m)
		}
	}
	if n := h.sim.Counters().ByRoute[d.removeRoute][200]; d.kind == "ortto" && n != 3+100 {
		// 300 leavers: 3 removal requests (100 a call), after week 1's 100 upserts.
		t.Errorf("%d merges, want 100 upserts and 3 removals", n)
	}
}

func TestSafetyBrakeHoldsLargeRemovals(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testSafetyBrake)
}

func testSafetyBrake(t *testing.T, d destination) {
	h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
	h.drop("a.csv", csvRange(1, 400, "gold"))
	before := h.sim.Counters().Total
	half := csvRange(201, 400, "gold")
	res := h.drop("b.csv", half)
	if res[0].Status != run.StatusHeld || !strings.Contains(res[0].Message, "--allow-large-removal") || strings.Contains(res[0].Message, "%!") {
		t.Fatalf("50%% leaving: %+v", res[0])
	}
	if n := h.sim.Counters().Total - before; n != 0 {
		t.Fatalf("a held run sent %d requests", n)
	}
	if rep := h.report(res[0]); rep.Status != run.StatusHeld || rep.Message == "" {
		t.Fatalf("held report %+v", rep)
	}
	// Allowed once, by hand (the refresh function's allowLargeRemoval).
	again := h.refresh(run.RefreshRequest{Trigger: run.TriggerManual, Export: "vip-newsletter", AllowLargeRemoval: true})
	if again[0].RunID != res[0].RunID || again[0].Status != run.StatusSucceeded {
		t.Fatalf("allowed run %+v", again[0])
	}
	if m := h.sim.members(); len(m) != 200 {
		t.Fatalf("%d members after the allowed removal, want 200", len(m))
	}
}

// TestResumeAfterKill kills a run's process after some groups (as a
// killed process or Lambda would), runs the file again, and expects: the
// killed attempt closed with what it delivered counted, the next attempt
// planned against what was delivered (so it sends exactly the rest), every
// contact counted once across the two, and the destination exact.
func TestResumeAfterKill(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testResumeAfterKill)
}

func testResumeAfterKill(t *testing.T, d destination) {
	data := generate(t, sample.Options{Rows: 2500, Seed: 21, Invalid: 101, Dupes: 70})
	ref := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
	want := ref.report(ref.drop("a.csv", data)[0])

	for _, killAt := range []int{1, 7, 13, 24} {
		t.Run(fmt.Sprint("after batch ", killAt), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
			var done atomic.Int32
			var once sync.Once
			var kill func()
			crashing, killer := h.crashingPipeline("crashing", func(o *local.Options) {
				o.Progress = func(p runner.Progress) {
					if int(done.Add(1)) >= killAt {
						once.Do(kill)
					}
				}
			})
			kill = killer
			key := "segments/vip-customers/a.csv"
			info := h.put(key, data)
			req := run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: key, ETag: info.ETag, Size: info.Size}}
			first, err := crashing.Service.Start(context.Background(), req)
			if err != nil || first[0].Attempt == 0 {
				t.Fatalf("the run to kill: %+v, %v", first, err)
			}
			crashing.Runner.Wait()
			h.waitIdle()
			before := h.sim.Counters().ByRoute[d.upsertRoute][200]

			res, err := awaitAll(context.Background(), h.p.Service, req)
			if err != nil {
				t.Fatal(err)
			}
			closed, err := run.ReadAttemptReport(context.Background(), h.p.Store, want.Export, want.RunID, first[0].Attempt)
			if err != nil {
				t.Fatalf("the killed attempt was not closed: %v", err)
			}
			resent := h.sim.Counters().ByRoute[d.upsertRoute][200] - before
			h.assertState(expected(t, data))
			if closed.Status == run.StatusSucceeded { // killed after its last batch: it was whole
				if res[0].Status != run.StatusUpToDate || resent != 0 {
					t.Fatalf("after a whole attempt: %s, %d requests", res[0].Status, resent)
				}
				return
			}
			got := h.report(res[0])
			if got.Status != run.StatusSucceeded || got.Prior != 1 || !got.Outcome.Reconciles() || !closed.Outcome.Reconciles() {
				t.Fatalf("resumed run %s after %d attempts: %+v; killed one %+v", got.Status, got.Prior, got.Outcome, closed.Outcome)
			}
			if sent := closed.Outcome.Sent + got.Outcome.Sent; sent != want.Outcome.Sent {
				t.Fatalf("%d sent by the killed attempt and %d by the next: %d, want %d, each contact once", closed.Outcome.Sent, got.Outcome.Sent, sent, want.Outcome.Sent)
			}
			if planned := got.Plan.Added + got.Plan.Changed; planned != want.Plan.Added-closed.Outcome.Sent {
				t.Fatalf("the next attempt planned %d upserts, want the %d not delivered", planned, want.Plan.Added-closed.Outcome.Sent)
			}
			if resent != got.Batches.Total {
				t.Fatalf("the next attempt made %d upsert requests for its %d batches", resent, got.Batches.Total)
			}
		})
	}
}

// TestFilesArrivingTogetherRunInArrivalOrder delivers two files' events at
// the same moment: whichever is handled first, the runs never interleave and
// Autopilot ends up holding the later file (the earlier one runs first or
// is skipped as superseded, never after the later one).
func TestFilesArrivingTogetherRunInArrivalOrder(t *testing.T) {
	t.Parallel()
	first := generate(t, sample.Options{Rows: 400, Seed: 5, Invalid: 7, Dupes: 9})
	second := generate(t, sample.Options{Rows: 400, Seed: 5, Invalid: 7, Dupes: 9, Changed: 40, Removed: 30, Added: 20})
	forEachDestination(t, func(t *testing.T, d destination) {
		testArrivalOrder(t, d, first, second)
	})
}

func testArrivalOrder(t *testing.T, d destination, first, second []byte) {
	for i := range 4 {
		t.Run(fmt.Sprint("round ", i), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
			arrived := time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)
			var srcs []run.Source
			for _, f := range []struct {
				name string
				data []byte
			}{{"monday.csv", first}, {"tuesday.csv", second}} {
				key := "segments/vip-customers/" + f.name
				info := h.put(key, f.data)
				srcs = append(srcs, run.Source{Key: key, ETag: info.ETag, Size: info.Size})
			}
			results := make([]run.Result, 2)
			var wg sync.WaitGroup
			for j := range 2 {
				// Alternate which event is handled first.
				j := (j + i) % 2
				wg.Go(func() {
					res, err := awaitAll(context.Background(), h.p.Service, run.StartRequest{Trigger: run.TriggerS3,
						Source: srcs[j], Arrived: arrived.Add(time.Duration(j) * time.Second)})
					if err != nil {
						t.Error(err)
						return
					}
					results[j] = res[0]
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			t.Logf("results: %+v", results)
			h.assertState(expected(t, second))
			later := h.report(results[1])
			if later.Status != run.StatusSucceeded || !later.SnapshotPromoted {
				t.Fatalf("later file's run: %s %s", later.Status, later.Message)
			}
			// Attempts are numbered by the export's claims: an earlier file
			// that ran, ran before the later one.
			earlier := h.report(results[0])
			switch {
			case earlier.Status == run.StatusSuperseded:
			case earlier.Status == run.StatusSucceeded && earlier.Attempt < later.Attempt:
			default:
				t.Fatalf("earlier file's run %s (attempt %d); the later one's was attempt %d", earlier.Status, earlier.Attempt, later.Attempt)
			}
		})
	}
}

// TestNeverResubscribes: someone who unsubscribed in the destination,
// before segpilot ever sent them or between runs, stays unsubscribed when
// their data changes. The simulators apply a subscription field as the
// real APIs do (Autopilot's "unsubscribed": false, Ortto's "bol::p":
// true re-subscribe), so a client that sent one would fail here.
func TestNeverResubscribes(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testNeverResubscribes)
}

func testNeverResubscribes(t *testing.T, d destination) {
	h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
	// Someone unsubscribed before segpilot ever ran (put on the list by hand).
	early := sample.Email(3)
	if err := h.sim.addOutsider(early); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.optOut(early); err != nil {
		t.Fatal(err)
	}
	h.drop("a.csv", csvRange(1, 300, "gold"))
	// Others unsubscribe between runs; then their data changes.
	late := []string{sample.Email(10), sample.Email(250)}
	for _, e := range late {
		if err := h.sim.optOut(e); err != nil {
			t.Fatal(err)
		}
	}
	res := h.drop("b.csv", csvRange(1, 300, "platinum"))
	if res[0].Counts.Changed != 300 {
		t.Fatalf("plan %+v", res[0].Counts)
	}
	unsubscribed := map[string]bool{}
	for email, c := range h.sim.holds() {
		if !c.subscribed {
			unsubscribed[email] = true
		}
		if c.tier != "platinum" {
			t.Fatalf("%s was not updated", email)
		}
	}
	for _, e := range append(late, early) {
		if !unsubscribed[e] {
			t.Errorf("%s was re-subscribed", e)
		}
	}
	if len(unsubscribed) != 3 {
		t.Errorf("%d contacts unsubscribed, want 3", len(unsubscribed))
	}
}
