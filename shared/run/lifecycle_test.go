package run_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

func TestQueueRunsOneAtATimeInArrivalOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
	if a.Status != run.StatusRunning || !a.Started || a.Attempt != 1 {
		t.Fatalf("first file: %+v", a)
	}
	exA := f.cloud.last(t)
	// Two more files arrive while a runs; c's event is delivered first.
	ingest := f.service()
	c := f.arrive(ingest, "c.csv", 3, "c@example.com")
	b := f.arrive(ingest, "b.csv", 2, "b@example.com")
	for _, r := range []run.Result{b, c} {
		if r.Status != run.StatusQueued || r.Started {
			t.Fatalf("file arriving during a run: %+v", r)
		}
	}
	// A duplicate delivery of a's event starts nothing while a runs.
	if again := f.arrive(ingest, "a.csv", 1, "a@example.com"); again.Started || again.Status != run.StatusQueued {
		t.Fatalf("duplicate event during the run: %+v", again)
	}

	// a ends: its finalize frees the export and kicks the queue, and
	// starts nothing itself.
	f.sendAll(f.service(), exA)
	if rep := f.finish(f.service(), exA); rep.Status != run.StatusSucceeded {
		t.Fatalf("a: %s %s", rep.Status, rep.Message)
	}
	if runs := f.cloud.runs(); len(runs) != 1 || len(f.kicked) != 1 {
		t.Fatalf("after a's finalize: executions %v, kicks %v; want none started by finalize, one kick", runs, f.kicked)
	}
	// The kick drains: a's duplicate is up to date, then b (arrived before c).
	if err := f.service().Kick(context.Background(), "vip"); err != nil {
		t.Fatal(err)
	}
	exB := f.cloud.last(t)
	if exB.RunID != b.RunID || exB.Attempt != 2 {
		t.Fatalf("after the kick: %+v, want b as attempt 2", exB)
	}
	f.sendAll(f.service(), exB)
	f.finish(f.service(), exB)
	if err := f.service().Kick(context.Background(), "vip"); err != nil {
		t.Fatal(err)
	}
	exC := f.cloud.last(t)
	if got, want := f.cloud.runs(), []string{a.RunID, b.RunID, c.RunID}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("executions %v, want %v", got, want)
	}
	f.sendAll(f.service(), exC)
	f.finish(f.service(), exC)

	// A late event for a file older than c is skipped, with a report saying why.
	old := f.arrive(ingest, "old.csv", 0, "old@example.com")
	if old.Status != run.StatusSuperseded || old.Started {
		t.Fatalf("older file after a newer one: %+v", old)
	}
	rep, err := run.ReadReport(context.Background(), f.st, "vip", old.RunID)
	if err != nil || rep.Status != run.StatusSuperseded || !strings.Contains(rep.Message, "c.csv") {
		t.Fatalf("report of the skipped file: %+v, %v", rep, err)
	}
	// The newest file's event again is up to date, not an older file.
	again := f.deliver(ingest, run.Source{Key: "segments/vip/c.csv", ETag: md5Of("Email\nc@example.com\n")}, 3)
	if again.Status != run.StatusUpToDate || len(f.cloud.runs()) != 3 {
		t.Fatalf("the newest file again: %+v (executions %v)", again, f.cloud.runs())
	}
}

// errTimeout is an answer that does not say whether the call was applied.
var errTimeout = errors.New("request timed out")

// A StartExecution whose answer is lost (a timeout) may have started the
// execution: the attempt keeps the export, and the next drain asks. Whether
// it had started or not, exactly one execution of the attempt exists.
func TestStartWithAnUnclearAnswerStartsOnce(t *testing.T) {
	t.Parallel()
	for _, started := range []bool{true, false} {
		t.Run(fmt.Sprint("started ", started), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			var calls atomic.Int32
			f.cloud.onStart = func(string) (bool, error) {
				if calls.Add(1) == 1 {
					return started, errTimeout
				}
				return true, nil
			}
			svc := f.service()
			svc.Transient = func(err error) bool { return errors.Is(err, errTimeout) }
			key := "segments/vip/a.csv"
			info := f.put(key, "Email\na@example.com\n")
			req := run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: key, ETag: info.ETag}}
			if _, err := svc.Start(context.Background(), req); !errors.Is(err, errTimeout) {
				t.Fatalf("the first delivery: %v; want the timeout (Lambda retries the event)", err)
			}
			// Lambda's retry of the event, and a second file meanwhile.
			for range 2 {
				res, err := f.service().Start(context.Background(), req)
				if err != nil || res[0].Status != run.StatusQueued {
					t.Fatalf("the retried delivery: %+v, %v; want queued behind its own attempt", res, err)
				}
			}
			if b := f.arrive(f.service(), "b.csv", 9, "b@example.com"); b.Status != run.StatusQueued {
				t.Fatalf("another file while the attempt's start is unclear: %+v", b)
			}
			if runs := f.cloud.runs(); len(runs) != 1 {
				t.Fatalf("executions %v; want exactly one", runs)
			}
			ex := f.cloud.last(t)
			if ex.Attempt != 1 {
				t.Fatalf("the execution is attempt %d, want 1", ex.Attempt)
			}
		})
	}
}

// A start refused outright (a 4xx: nothing started) ends the attempt as
// failed, queues its file again, and the next drain runs it anew.
func TestStartRefusedEndsTheAttemptAndRequeues(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	refused := errors.New("InvalidExecutionInput")
	var calls atomic.Int32
	f.cloud.onStart = func(string) (bool, error) {
		if calls.Add(1) == 1 {
			return false, refused
		}
		return true, nil
	}
	key := "segments/vip/a.csv"
	info := f.put(key, "Email\na@example.com\n")
	req := run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: key, ETag: info.ETag}}
	res, err := f.svc.Start(context.Background(), req)
	if !errors.Is(err, refused) || res[0].Status != run.StatusFailed {
		t.Fatalf("refused start: %+v, %v", res, err)
	}
	rep, err := run.ReadAttemptReport(context.Background(), f.st, "vip", res[0].RunID, 1)
	if err != nil || rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "never ran") || rep.Outcome.Failed != 1 || !rep.Outcome.Reconciles() {
		t.Fatalf("attempt 1's report: %+v, %v", rep, err)
	}
	if err := f.service().Kick(context.Background(), "vip"); err != nil {
		t.Fatal(err)
	}
	if ex := f.cloud.last(t); ex.RunID != res[0].RunID || ex.Attempt != 2 {
		t.Fatalf("after the kick: %+v; want the file queued again, as attempt 2", ex)
	}
}

func TestStoppedAttemptIsClosedOnceItsInvocationsAreDone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
	exA := f.cloud.last(t)
	if got := f.arrive(f.svc, "b.csv", 2, "b@example.com"); got.Status != run.StatusQueued {
		t.Fatalf("b while a runs: %+v", got)
	}
	f.cloud.end(execName(exA), f.now) // stopped by hand
	// Its invocations in flight may still write: nothing takes over yet.
	f.now = f.now.Add(time.Minute)
	if c := f.arrive(f.svc, "c.csv", 3, "c@example.com"); c.Status != run.StatusQueued || len(f.cloud.runs()) != 1 {
		t.Fatalf("c a minute after a was stopped: %+v, executions %v", c, f.cloud.runs())
	}
	// Past the grace, d's event closes a and starts b, which waited longest.
	f.now = f.now.Add(20 * time.Minute)
	if d := f.arrive(f.svc, "d.csv", 4, "d@example.com"); d.Status != run.StatusQueued {
		t.Fatalf("d: %+v", d)
	}
	if runs := f.cloud.runs(); len(runs) != 2 || runs[1] == a.RunID {
		t.Fatalf("executions %v, want a then b", runs)
	}
	rep, err := run.ReadAttemptReport(context.Background(), f.st, "vip", a.RunID, 1)
	if err != nil || rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "stopped by hand") || rep.FinishedAt.IsZero() {
		t.Fatalf("a's attempt report: %+v, %v; want failed, saying why", rep, err)
	}
	if latest, err := run.ReadReport(context.Background(), f.st, "vip", a.RunID); err != nil || latest.Attempt != 1 || latest.Status != run.StatusFailed {
		t.Fatalf("a's run report: %+v, %v", latest, err)
	}

	// a's event again (Lambda's retry), once b and the others are done:
	// files that arrived after it have run, so it is superseded.
	for range 3 {
		ex := f.cloud.last(t)
		f.finish(f.service(), ex)
		if err := f.service().Kick(context.Background(), "vip"); err != nil {
			t.Fatal(err)
		}
	}
	f.now = f.now.Add(time.Minute)
	again := f.arrive(f.svc, "a.csv", 1, "a@example.com")
	if again.RunID != a.RunID {
		t.Fatalf("a again: %+v", again)
	}
	if again.Status != run.StatusSuperseded {
		t.Fatalf("a's file after newer ones ran: %+v; want superseded", again)
	}
}

func TestStoppedRunsOwnFileRunsAsANewAttempt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
	exA := f.cloud.last(t)
	f.cloud.end(execName(exA), f.now)
	f.now = f.now.Add(20 * time.Minute)
	again := f.arrive(f.svc, "a.csv", 5, "a@example.com") // e.g. a manual refresh of the newest file
	if again.RunID != a.RunID || again.Status != run.StatusRunning || !again.Started || again.Attempt != 2 {
		t.Fatalf("the stopped run's file again: %+v; want run %s started as attempt 2", again, a.RunID)
	}
	if ex := f.cloud.last(t); execName(ex) == execName(exA) {
		t.Fatalf("attempt 2 reused the execution name %s", execName(ex))
	}
	// Attempt 2 holds the export now: a new file waits for it.
	if c := f.arrive(f.svc, "c.csv", 6, "c@example.com"); c.Status != run.StatusQueued || len(f.cloud.runs()) != 2 {
		t.Fatalf("c during attempt 2: %+v (executions %v)", c, f.cloud.runs())
	}
}

func TestUnknownLivenessWaits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
	f.cloud.end(execName(f.cloud.last(t)), f.now.Add(-time.Hour))
	f.cloud.mu.Lock()
	f.cloud.liveErr = errors.New("AccessDeniedException")
	f.cloud.mu.Unlock()
	if got := f.arrive(f.svc, "b.csv", 2, "b@example.com"); got.Status != run.StatusQueued {
		t.Fatalf("b: %+v; want queued: without an answer, wait", got)
	}
	if _, err := run.ReadAttemptReport(context.Background(), f.st, "vip", a.RunID, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a was closed without knowing it ended: %v", err)
	}
}

// A finalize that runs after its attempt was closed by a drainer (an
// execution stopped by hand and redriven, say) finds the attempt's one
// report and changes nothing: not the state, not the snapshot.
func TestLateFinalizeOfAClosedAttemptChangesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.arrive(f.svc, "a.csv", 1, "a@example.com")
	exA := f.cloud.last(t)
	f.cloud.end(execName(exA), f.now)
	f.now = f.now.Add(20 * time.Minute)
	f.arrive(f.svc, "b.csv", 2, "b@example.com") // closes a, starts b
	exB := f.cloud.last(t)
	before := f.raw("state/vip/state.json")
	for _, it := range f.items(exA) { // its late groups: fenced, nothing sent
		_, err := f.service().SyncBatch(context.Background(), run.Group{Items: []run.Item{it}, BatchInput: batchInput(exA)})
		if !errors.As(err, new(*run.Fenced)) {
			t.Fatalf("a late group of the closed attempt: %v; want Fenced", err)
		}
	}
	rep, err := f.service().Finalize(context.Background(), finalizeInput(exA))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "stopped by hand") {
		t.Fatalf("the late finalize: %s %q; want the attempt's one report (closed as stopped)", rep.Status, rep.Message)
	}
	if after := f.raw("state/vip/state.json"); after != before {
		t.Fatalf("the late finalize changed the export's state:\n%s\nwas\n%s", after, before)
	}
	if !strings.Contains(f.raw("state/vip/state.json"), execName(exB)) {
		t.Fatal("b no longer holds the export")
	}
}

// A group of an attempt that no longer holds its export sends nothing.
func TestFencedGroupSendsNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex, groups := f.planned("a@example.com")
	f.cloud.end(execName(ex), f.now)
	f.now = f.now.Add(20 * time.Minute)
	f.arrive(f.svc, "b.csv", 2, "b@example.com") // closes the attempt
	var upserts int
	svc := f.service()
	svc.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
		return countingDestination{n: &upserts}, nil
	}
	_, err := svc.SyncBatch(context.Background(), groups[0])
	var fenced *run.Fenced
	if !errors.As(err, &fenced) || upserts != 0 {
		t.Fatalf("a closed attempt's group: %v (%T), %d upserts; want *run.Fenced and nothing sent", err, err, upserts)
	}
}

func TestRetriedFinalizeWritesOneReport(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex, _ := f.planned("a@example.com")
	f.sendAll(f.service(), ex)
	first := f.finish(f.service(), ex)
	state := f.raw("state/vip/state.json")
	second, err := f.service().Finalize(context.Background(), finalizeInput(ex))
	if err != nil {
		t.Fatal(err)
	}
	if first.Status != run.StatusSucceeded || second.FinishedAt != first.FinishedAt || f.raw("state/vip/state.json") != state {
		t.Fatalf("retried finalize: %+v then %+v; want the same report and state", first, second)
	}
}

// A Map-level error after every batch settled (on AWS: the ResultWriter
// failing) does not fail the run: status and promotion come from the
// batches' results, so the next run of the unchanged file sends nothing.
func TestMapErrorAfterEveryBatchSettledSucceeds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	emails := emailsN(150)
	ex, _ := f.planned(emails...)
	f.sendAll(f.service(), ex)
	in := finalizeInput(ex)
	in.MapError = &run.MapError{Error: "States.ResultWriterFailed", Cause: "S3 unavailable"}
	rep, err := f.service().Finalize(context.Background(), in)
	if err != nil || rep.Status != run.StatusSucceeded || !rep.SnapshotPromoted || rep.Outcome.Sent != 150 {
		t.Fatalf("finalize after a Map error: %+v, %v; want succeeded, 150 sent, promoted", rep, err)
	}
	// After a Map error the Map's other children may still run: the
	// export stays held until the execution and its invocations are over.
	f.cloud.end(execName(ex), f.now)
	if held := f.arrive(f.service(), "a.csv", 1, emails...); held.Status != run.StatusQueued {
		t.Fatalf("the file again at once: %+v; want queued behind the held export", held)
	}
	f.now = f.now.Add(20 * time.Minute)
	again := f.arrive(f.service(), "a.csv", 1, emails...)
	if again.Status != run.StatusUpToDate || len(f.cloud.runs()) != 1 {
		t.Fatalf("the unchanged file again: %+v, executions %v; want up to date, nothing started", again, f.cloud.runs())
	}
}

// One batch failed for good: the snapshot left keeps its contacts'
// previous state, so the next run sends exactly those, plus the new delta.
func TestOneFailedBatchResendsOnlyItsContacts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	emails := emailsN(250) // three batches: c000-c099, c100-c199, c200-c249
	ex, groups := f.planned(emails...)
	failing := f.service()
	failing.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
		return failBatch{failOn: "c100@example.com"}, nil
	}
	for _, g := range groups {
		_, _ = failing.SyncBatch(context.Background(), g) // batch 2 answers Transient: its retries fail too
	}
	rep := f.finish(f.service(), ex)
	if rep.Status != run.StatusFailed || rep.Outcome.Sent != 150 || rep.Outcome.Failed != 100 || !strings.Contains(rep.Message, "batch 2") || !rep.SnapshotPromoted {
		t.Fatalf("the run with a failed batch: %+v", rep)
	}
	// Next week: the same contacts and ten new ones.
	for i := 250; i < 260; i++ {
		emails = append(emails, fmt.Sprintf("c%03d@example.com", i))
	}
	next := f.arrive(f.service(), "week2.csv", 9, emails...)
	// The failed batch's contacts are unknown (their upsert may have been
	// applied): sent again as changed.
	if next.Status != run.StatusRunning || next.Counts.Changed != 100 || next.Counts.Added != 10 || next.Counts.Unchanged != 150 {
		t.Fatalf("the next run: %+v; want the 100 failed sent again (changed), 10 new added, 150 unchanged", next)
	}
}

// failBatch accepts every upsert but for the batch holding failOn, which
// fails (a retryable answer that never comes good).
type failBatch struct {
	listOnly
	failOn string
}

func (d failBatch) Upsert(ctx context.Context, list string, cs []dest.Contact, _ dest.Write) ([]dest.Outcome, error) {
	out, _ := d.listOnly.Upsert(ctx, list, cs, dest.WriteAny)
	for _, c := range cs {
		if c.Email == d.failOn {
			for i := range out {
				out[i].Status, out[i].Reason = dest.Failed, "status 503 after every retry"
			}
		}
	}
	return out, nil
}

// One export whose state cannot be read fails with its own report; the
// other exports of the segment still run.
func TestBrokenExportDoesNotStopOthers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.put(run.ConfigKey, queueConfig+`  also:
    connection: main
    segment: vip
    list: Also
    match:
      email: Email
    mode: upsert
`)
	f.put("state/also/state.json", "{not json")
	key := "segments/vip/a.csv"
	info := f.put(key, "Email\na@example.com\n")
	res, err := f.svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3, Source: run.Source{Key: key, ETag: info.ETag}})
	var broken *run.BrokenState
	if !errors.As(err, &broken) || !strings.Contains(err.Error(), "export also") {
		t.Fatalf("Start: %v; want export also's broken state", err)
	}
	byExport := map[string]run.Result{}
	for _, r := range res {
		byExport[r.Export] = r
	}
	if got := byExport["vip"]; got.Status != run.StatusRunning || !got.Started {
		t.Fatalf("export vip beside a broken one: %+v", got)
	}
	rep, err := run.ReadReport(context.Background(), f.st, "also", byExport["also"].RunID)
	if err != nil || rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "state/also/state.json") {
		t.Fatalf("export also's report: %+v, %v; want failed, naming its state", rep, err)
	}
}

// Finalize ends a run and starts nothing: with a large file queued behind
// it, it returns without reading that file (a store that would hang on any
// segment read proves it), and leaves the file queued for the kick.
func TestFinalizeDoesNotPlanTheNextFile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ex, _ := f.planned("a@example.com")
	var big strings.Builder
	big.WriteString("Email\n")
	for i := range 1_000_000 {
		fmt.Fprintf(&big, "p%07d@example.com\n", i)
	}
	f.put("segments/vip/big.csv", big.String())
	if b := f.deliver(f.svc, run.Source{Key: "segments/vip/big.csv", ETag: md5Of(big.String())}, 2); b.Status != run.StatusQueued {
		t.Fatalf("the big file while a runs: %+v", b)
	}
	svc := f.service()
	var segmentReads atomic.Int32
	svc.Store = hangingSegments{ObjectStore: f.st, reads: &segmentReads}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := svc.Finalize(ctx, finalizeInput(ex)); err != nil {
		t.Fatalf("finalize: %v", err)
	}
	if n := segmentReads.Load(); n != 0 || ctx.Err() != nil {
		t.Fatalf("finalize read a segment file %d times (ctx %v); it must plan nothing", n, ctx.Err())
	}
	if runs := f.cloud.runs(); len(runs) != 1 || len(f.kicked) != 1 {
		t.Fatalf("executions %v, kicks %v; want the big file still queued, one kick", runs, f.kicked)
	}
}

// hangingSegments blocks every read of a segment file until ctx ends.
type hangingSegments struct {
	store.ObjectStore
	reads *atomic.Int32
}

func (h hangingSegments) Get(ctx context.Context, key string) (io.ReadCloser, store.ObjectInfo, error) {
	if strings.HasPrefix(key, "segments/") {
		h.reads.Add(1)
		<-ctx.Done()
		return nil, store.ObjectInfo{}, ctx.Err()
	}
	return h.ObjectStore.Get(ctx, key)
}

// raw reads an object as a string.
func (f *fixture) raw(key string) string {
	f.t.Helper()
	rc, _, err := f.st.Get(context.Background(), key)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}

// TestSweepClosesAnAttemptWhoseMapFailed: a's Map fails (its key refused)
// and its execution ends; b arrives within the grace and waits. Nothing
// else arrives: the sweep schedule, past the grace, closes a (its report
// from every batch) and starts b, with no file or refresh to trigger it.
func TestSweepClosesAnAttemptWhoseMapFailed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
	exA := f.cloud.last(t)
	in := finalizeInput(exA)
	in.MapError = &run.MapError{Error: "States.ExceedToleratedFailureThreshold", Cause: "The specified tolerated failure threshold was exceeded"}
	if rep, err := f.service().Finalize(context.Background(), in); err != nil || !rep.Closing {
		t.Fatalf("finalize after the Map failed: %+v, %v; want a closing report", rep, err)
	}
	f.cloud.end(execName(exA), f.now)
	f.now = f.now.Add(time.Minute)
	if b := f.arrive(f.svc, "b.csv", 2, "b@example.com"); b.Status != run.StatusQueued {
		t.Fatalf("b a minute after a's Map failed: %+v; want queued", b)
	}
	if _, err := f.svc.Sweep(context.Background()); err != nil || len(f.cloud.runs()) != 1 {
		t.Fatalf("a sweep within the grace: %v, executions %v; want a left alone", err, f.cloud.runs())
	}
	f.now = f.now.Add(20 * time.Minute)
	if _, err := f.svc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if runs := f.cloud.runs(); len(runs) != 2 || runs[1] == a.RunID {
		t.Fatalf("executions %v after the sweep; want a then b", runs)
	}
	rep, err := run.ReadAttemptReport(context.Background(), f.st, "vip", a.RunID, 1)
	if err != nil || rep.Closing || rep.Status != run.StatusFailed || !strings.Contains(rep.Error, "ExceedToleratedFailureThreshold") {
		t.Fatalf("a's attempt report: %+v, %v; want failed, with the Map's error", rep, err)
	}
}

// A run that changed the list and then failed keeps its report when its
// file's event comes again after a newer file ran (superseded, decided
// without an attempt): the report is the record of what the run sent, and
// what undo reads. Once the newer run is undone, it can be undone in turn.
func TestADecisionKeepsTheReportOfARunThatChangedTheList(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	emails := emailsN(250)
	ex, groups := f.planned(emails...) // a.csv, at minute 1
	failing := f.service()
	failing.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
		return failBatch{failOn: "c100@example.com"}, nil
	}
	for _, g := range groups {
		_, _ = failing.SyncBatch(context.Background(), g)
	}
	if rep := f.finish(f.service(), ex); rep.Status != run.StatusFailed || !rep.SnapshotPromoted {
		t.Fatalf("a.csv's run: %+v; want failed, its snapshot promoted", rep)
	}

	f.now = f.now.Add(time.Minute)
	if next := f.arrive(f.service(), "week2.csv", 9, emails[:200]...); next.Status != run.StatusRunning {
		t.Fatalf("week2.csv: %+v", next)
	}
	ex2 := f.cloud.last(t)
	f.sendAll(f.service(), ex2)
	if rep := f.finish(f.service(), ex2); rep.Status != run.StatusSucceeded {
		t.Fatalf("week2.csv's run: %+v", rep)
	}

	f.now = f.now.Add(time.Minute)
	if again := f.arrive(f.service(), "a.csv", 1, emails...); again.Status != run.StatusSuperseded || again.RunID != ex.RunID {
		t.Fatalf("a.csv's event again: %+v; want its run %s superseded", again, ex.RunID)
	}
	rep, err := run.ReadReport(context.Background(), f.st, ex.Export, ex.RunID)
	if err != nil || rep.Status != run.StatusFailed || !rep.SnapshotPromoted || rep.Outcome.Sent != 150 {
		t.Fatalf("a.csv's run's report after the decision: %+v, %v; want the attempt's (failed, 150 sent, snapshot promoted)", rep, err)
	}

	svc := f.service()
	undo2, err := svc.Undo(context.Background(), run.UndoRequest{Trigger: run.TriggerManual, Run: ex2.RunID})
	if err != nil || undo2.Status != run.StatusRunning {
		t.Fatalf("undoing week2.csv's run: %+v, %v", undo2, err)
	}
	ex3 := f.cloud.last(t)
	f.sendAll(svc, ex3)
	if rep := f.finish(svc, ex3); rep.Status != run.StatusSucceeded {
		t.Fatalf("the undo of week2.csv's run: %+v", rep)
	}
	f.now = f.now.Add(time.Minute)
	// Planned, not refused (the fixture's destination cannot list its
	// contacts, which an undo's updates need, so it goes no further).
	if undo1, _ := f.service().Undo(context.Background(), run.UndoRequest{Trigger: run.TriggerManual, Run: ex.RunID}); undo1.Status == run.StatusRefused || undo1.Counts.Previous != 250 {
		t.Fatalf("then undoing a.csv's run: %+v; want it planned against the 250 it left", undo1)
	}
}

// account lists every contact of the account; it remembers the share it
// was connected with when it is asked to list them.
type account struct {
	listOnly
	share  run.Share
	listed *[]run.Share
	emails []string
}

func (a account) Contacts(_ context.Context, each func(string) error) error {
	*a.listed = append(*a.listed, a.share)
	for _, e := range a.emails {
		if err := each(e); err != nil {
			return err
		}
	}
	return nil
}

// An update export to Autopilot lists the account's contacts before the
// fan-out, alone: at the connection's whole budget, not a worker's share
// (100,000 contacts are 1,000 requests: 200 s at 5 a second, ten times
// that at a share, beyond ingest's 900 s).
func TestTheAccountLookupPacesAtTheWholeBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.put(run.ConfigKey, strings.Replace(queueConfig, "mode: upsert", "mode: update", 1))
	var listed []run.Share
	svc := f.service()
	svc.Connect = func(_ context.Context, _ config.Connection, sh run.Share) (run.Destination, error) {
		return account{share: sh, listed: &listed, emails: []string{"c001@example.com"}}, nil
	}
	emails := emailsN(250)
	if res := f.arrive(svc, "a.csv", 1, emails...); res.Status != run.StatusRunning {
		t.Fatalf("the update run: %+v", res)
	}
	if len(listed) != 1 || listed[0].RPS != 0 {
		t.Fatalf("the account was listed with shares %+v; want once, at the whole budget (RPS 0)", listed)
	}
}
