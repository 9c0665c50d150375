package e2e

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestOneFailedBatchIsAllTheNextRunResends: a batch of a 10,000-profile run
// fails for good (the destination answers 503 whatever the retries). The
// next run, of next week's file, sends exactly that batch's contacts and
// the week's delta, counted at the simulator: not the whole segment.
func TestOneFailedBatchIsAllTheNextRunResends(t *testing.T) {
	t.Parallel()
	week1 := generate(t, sample.Options{Rows: 10000, Seed: 31})
	week2 := generate(t, sample.Options{Rows: 10000, Seed: 31, Changed: 120, Added: 60})
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100))
		want1, want2 := expected(t, week1), expected(t, week2)
		victim := slices.Sorted(maps.Keys(want1))[5000]
		h.failUpserts(victim)
		rep := h.report(h.drop("week1.csv", week1)[0])
		if rep.Status != run.StatusFailed || rep.Outcome.Failed != 100 || rep.Batches.Failed != 1 || !rep.Outcome.Reconciles() {
			t.Fatalf("week 1: %s, %+v, %d batches failed; want failed, one batch of 100", rep.Status, rep.Outcome, rep.Batches.Failed)
		}
		failed := h.failedIn(rep)
		if len(failed) != 100 || !failed[victim] {
			t.Fatalf("rejected.csv lists %d failed contacts (the victim among them: %v), want its batch's 100", len(failed), failed[victim])
		}

		h.failUpserts("")
		before := h.sim.Upserted()
		rep2 := h.report(h.drop("week2.csv", week2)[0])
		if rep2.Status != run.StatusSucceeded {
			t.Fatalf("week 2: %s %s", rep2.Status, rep2.Message)
		}
		sent := map[string]bool{}
		for email, n := range h.sim.Upserted() {
			if n > before[email] {
				sent[email] = true
			}
		}
		want := maps.Clone(failed)
		for email, c := range want2 {
			if old, ok := want1[email]; !ok || old != c {
				want[email] = true
			}
		}
		if !maps.Equal(sent, want) {
			var extra, missing []string
			for e := range sent {
				if !want[e] {
					extra = append(extra, e)
				}
			}
			for e := range want {
				if !sent[e] {
					missing = append(missing, e)
				}
			}
			t.Fatalf("week 2 sent %d contacts, want %d (the failed batch and the delta): %d more (%v), %d fewer (%v)",
				len(sent), len(want), len(extra), firstKeys(asSet(extra), 3), len(missing), firstKeys(asSet(missing), 3))
		}
		h.assertState(want2)
	})
}

// failedIn reads the contacts a run's rejected.csv lists as failed.
func (h *harness) failedIn(rep *run.Report) map[string]bool {
	h.t.Helper()
	rc, _, err := h.p.Store.Get(context.Background(), rep.Rejected)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rc.Close()
	r := csv.NewReader(rc)
	r.FieldsPerRecord = 3
	out := map[string]bool{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			h.t.Fatal(err)
		}
		if strings.HasPrefix(rec[2], "failed: ") {
			out[rec[1]] = true
		}
	}
}

func asSet(s []string) map[string]bool {
	m := map[string]bool{}
	for _, e := range s {
		m[e] = true
	}
	return m
}

// mapResultsFail is a bucket whose writes of the Map's ResultWriter export
// fail: the Map fails with States.ResultWriterFailed after every child.
type mapResultsFail struct{ store.ObjectStore }

func (m mapResultsFail) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	if strings.Contains(key, "/map/") {
		return store.ObjectInfo{}, errors.New("injected: the ResultWriter's bucket is unavailable")
	}
	return m.ObjectStore.Put(ctx, key, body, opts)
}

// TestMapErrorAfterEveryBatchSettled: the Map fails after its last child
// succeeded (on AWS: States.ResultWriterFailed). The run is judged from its
// batches' results, so it succeeded, and the unchanged file run again
// sends nothing.
func TestMapErrorAfterEveryBatchSettled(t *testing.T) {
	t.Parallel()
	data := generate(t, sample.Options{Rows: 3000, Seed: 33, Invalid: 30, Dupes: 20})
	forEachDestination(t, func(t *testing.T, d destination) {
		h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100), func(o *local.Options) {
			folder, err := store.NewFolder(o.BucketDir)
			if err != nil {
				t.Fatal(err)
			}
			o.Store = mapResultsFail{folder}
		})
		rep := h.report(h.drop("a.csv", data)[0])
		if rep.Status != run.StatusSucceeded || !rep.SnapshotPromoted || rep.Outcome.Failed != 0 || !rep.Outcome.Reconciles() {
			t.Fatalf("the run: %s (%s), %+v; want succeeded, promoted", rep.Status, rep.Message, rep.Outcome)
		}
		before := h.contactRequests()
		again := h.drop("a.csv", data)[0]
		if again.Status != run.StatusUpToDate || h.contactRequests() != before {
			t.Fatalf("the unchanged file again: %s, %d contact requests; want up to date, none", again.Status, h.contactRequests()-before)
		}
		h.assertState(expected(t, data))
	})
}

// TestExportsSharingAListMakeOneList: two exports of one connection, on two
// segments, both sending to one list (Autopilot) or filling the same new
// custom fields (Ortto), their files dropped at the same moment, 20 times:
// one list (and each field made once), every contact on it once.
func TestExportsSharingAListMakeOneList(t *testing.T) {
	t.Parallel()
	a := generate(t, sample.Options{Rows: 300, Seed: 41})
	// Other people in the other segment.
	b := []byte(strings.ReplaceAll(string(generate(t, sample.Options{Rows: 300, Seed: 42})), "customer", "partner"))
	forEachDestination(t, func(t *testing.T, d destination) {
		for trial := range 20 {
			t.Run(fmt.Sprint("trial ", trial), func(t *testing.T) {
				t.Parallel()
				second := strings.Replace(strings.SplitN(configYAML(d, "upsert", 100), "exports:\n", 2)[1], "vip-newsletter:", "vip-second:", 1)
				second = strings.Replace(second, "segment: vip-customers", "segment: vip-second", 1)
				h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 100)+second)
				var wg sync.WaitGroup
				for _, f := range []struct{ seg, name string }{{"vip-customers", "a.csv"}, {"vip-second", "b.csv"}} {
					key := "segments/" + f.seg + "/" + f.name
					data := a
					if f.name == "b.csv" {
						data = b
					}
					info := h.put(key, data)
					wg.Go(func() {
						res, err := awaitAll(context.Background(), h.p.Service, run.StartRequest{Trigger: run.TriggerS3,
							Source: run.Source{Key: key, ETag: info.ETag, Size: info.Size}})
						if err != nil || len(res) != 1 || res[0].Status != run.StatusSucceeded {
							t.Errorf("%s: %+v, %v", f.name, res, err)
						}
					})
				}
				wg.Wait()
				if t.Failed() {
					return
				}
				want := expected(t, a)
				maps.Copy(want, expected(t, b))
				h.assertState(want) // one list (or tag) holding both, each once
				if err := h.sim.madeOnce(); err != nil {
					t.Fatal(err)
				}
				for email, n := range h.sim.Upserted() {
					if n != 1 {
						t.Fatalf("%s upserted %d times", email, n)
					}
				}
			})
		}
	})
}

// TestListDeletedByHandIsMadeAgainAndRefilled: someone deletes the export's
// Autopilot list between two runs (in one warm pipeline). The next run
// finds it gone, makes it again (through the connection's claim), and
// sends every contact of its file, since none is on the new list; the
// report says so.
func TestListDeletedByHandIsMadeAgainAndRefilled(t *testing.T) {
	t.Parallel()
	d := destinations[0]
	week1 := generate(t, sample.Options{Rows: 300, Seed: 51})
	week2 := generate(t, sample.Options{Rows: 300, Seed: 51, Changed: 30})
	h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
	h.drop("week1.csv", week1)
	ap := h.sim.(autopilotSim)
	for _, l := range ap.Dump().Lists {
		if err := ap.DeleteList(l.ID); err != nil {
			t.Fatal(err)
		}
	}
	rep := h.report(h.drop("week2.csv", week2)[0])
	if rep.Status != run.StatusSucceeded || rep.Plan.Added != len(expected(t, week2)) || !strings.Contains(strings.Join(rep.Notes, " "), "no longer holds list") {
		t.Fatalf("after the list was deleted: %s, plan %+v, notes %q; want every contact added again, and a note", rep.Status, rep.Plan, rep.Notes)
	}
	h.assertState(expected(t, week2))
	if err := h.sim.madeOnce(); err != nil {
		t.Fatal(err)
	}
}

// A list deleted while a run sends: the contacts sent before are not on
// the list made in its place, so that attempt fails with a note, leaves
// no snapshot, and queues its file again; the next attempt sends every
// contact to the new list.
func TestListDeletedMidRunIsRefilledByTheNextAttempt(t *testing.T) {
	t.Parallel()
	d := destinations[0] // Ortto's lists are tags: they cannot go
	week1 := generate(t, sample.Options{Rows: 300, Seed: 53})
	h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
	ap := h.sim.(autopilotSim)
	var upserts atomic.Int32
	f := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/contacts") && upserts.Add(1) == 2 {
			for _, l := range ap.Dump().Lists {
				if err := ap.DeleteList(l.ID); err != nil {
					t.Error(err)
				}
			}
		}
		return false
	}
	h.intercept.Store(&f)
	res := h.drop("week1.csv", week1)[0]
	rep := h.report(res)
	if rep.Status != run.StatusSucceeded || rep.Attempt != 2 || rep.Base != "" || rep.Outcome.Sent != len(expected(t, week1)) {
		t.Fatalf("the run: %s by attempt %d, base %q, %+v; want succeeded by attempt 2, sending every contact against no snapshot",
			rep.Status, rep.Attempt, rep.Base, rep.Outcome)
	}
	first, err := run.ReadAttemptReport(context.Background(), h.p.Store, res.Export, res.RunID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != run.StatusFailed || !first.Refill || !first.Requeued || !strings.Contains(first.Message, "queued again") || !first.Outcome.Reconciles() {
		t.Fatalf("the attempt whose list went: %s %q, refill %v, requeued %v, %+v; want failed, refill, queued again",
			first.Status, first.Message, first.Refill, first.Requeued, first.Outcome)
	}
	if lists := ap.Dump().Lists; len(lists) != 1 {
		t.Fatalf("%d lists, want the one made again", len(lists))
	}
	h.assertState(expected(t, week1))
}

// TestFullResyncSendsEveryContactOnce: the same file again as a full
// resync sends each of its contacts once more, unchanged or not, and the
// report says so; the file delivered normally after is up to date; and
// the brake still holds a full resync that would remove too many.
func TestFullResyncSendsEveryContactOnce(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		week1 := generate(t, sample.Options{Rows: 300, Seed: 81, Invalid: 30, Dupes: 25})
		h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
		first := h.drop("week1.csv", week1)[0]
		before := h.sim.Upserted()
		info := h.put("segments/vip-customers/week1.csv", week1)
		src := run.Source{Key: "segments/vip-customers/week1.csv", ETag: info.ETag, Size: info.Size}
		res, err := awaitAll(context.Background(), h.p.Service, run.StartRequest{Trigger: run.TriggerManual, FullResync: true, Source: src})
		if err != nil || len(res) != 1 || res[0].RunID == first.RunID {
			t.Fatalf("full resync: %+v, %v; want a run of its own", res, err)
		}
		rep := h.report(res[0])
		want := expected(t, week1)
		if rep.Status != run.StatusSucceeded || !rep.FullResync || rep.Plan.Resent != len(want) || rep.Outcome.Sent != len(want) || !rep.Outcome.Reconciles() {
			t.Fatalf("report %s, full %v, plan %+v, outcome %+v; want all %d sent again", rep.Status, rep.FullResync, rep.Plan, rep.Outcome, len(want))
		}
		for email, n := range h.sim.Upserted() {
			if n != before[email]+1 {
				t.Fatalf("%s upserted %d times, %d before the full resync; want once more", email, n, before[email])
			}
		}
		h.assertState(want)
		if again := h.drop("week1.csv", week1)[0]; again.Status != run.StatusUpToDate {
			t.Fatalf("the file delivered normally after: %+v; want up to date", again)
		}
		// Half the list leaving: the brake holds a full resync too.
		half := strings.Join(strings.Split(string(week1), "\n")[:150], "\n") + "\n"
		info = h.put("segments/vip-customers/week2.csv", []byte(half))
		res, err = awaitAll(context.Background(), h.p.Service, run.StartRequest{Trigger: run.TriggerManual, FullResync: true,
			Source: run.Source{Key: "segments/vip-customers/week2.csv", ETag: info.ETag, Size: info.Size}})
		if err != nil || len(res) != 1 || res[0].Status != run.StatusHeld {
			t.Fatalf("a full resync removing half the list: %+v, %v; want held", res, err)
		}
	})
}
