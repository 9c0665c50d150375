package run_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

const queueConfig = `connections:
  main:
    kind: autopilot
    apiKeySecret: segpilot/autopilot
    baseURL: https://api2.autopilothq.com/v1
    consent: true
exports:
  vip:
    connection: main
    segment: vip
    list: VIP
    match:
      email: Email
    mode: upsert
`

// asyncStarter is Step Functions as ingest sees it: StartRun only records
// the execution; the test decides when it finishes.
type asyncStarter struct {
	mu       sync.Mutex
	started  []run.Execution
	names    map[string]bool
	ended    map[string]time.Time // executions stopped (by hand, say), and when
	stateErr error                // RunStatus fails with it
}

// RunStatus makes asyncStarter a run.RunChecker, as Step Functions is.
func (a *asyncStarter) RunStatus(_ context.Context, name string) (run.RunStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch at, ended := a.ended[name]; {
	case a.stateErr != nil:
		return run.RunStatus{State: run.RunActive}, a.stateErr
	case !a.names[name]:
		return run.RunStatus{State: run.RunNotStarted}, nil
	case ended:
		return run.RunStatus{State: run.RunEnded, EndedAt: at}, nil
	}
	return run.RunStatus{State: run.RunActive}, nil
}

// stop is StopExecution at a time: the run's finalize never runs.
func (a *asyncStarter) stop(name string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended == nil {
		a.ended = map[string]time.Time{}
	}
	a.ended[name] = at
}

// forget makes an execution unknown, as if its StartExecution never came.
func (a *asyncStarter) forget(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.names, name)
}

// execution is the name of the latest execution started for runID.
func (a *asyncStarter) execution(runID string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	latest := ""
	for name := range a.names {
		if (name == runID || strings.HasPrefix(name, runID+"-")) && name > latest {
			latest = name
		}
	}
	return latest
}

func (a *asyncStarter) StartRun(_ context.Context, name string, input []byte) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.names[name] {
		return false, nil
	}
	if a.names == nil {
		a.names = map[string]bool{}
	}
	a.names[name] = true
	var ex run.Execution
	if err := json.Unmarshal(input, &ex); err != nil {
		return false, err
	}
	a.started = append(a.started, ex)
	return true, nil
}

func (a *asyncStarter) runs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for _, ex := range a.started {
		ids = append(ids, ex.RunID)
	}
	return ids
}

type listOnly struct{}

func (listOnly) PrepareList(context.Context, dest.ListSpec) (string, error) { return "list-1", nil }
func (listOnly) Upsert(context.Context, string, []dest.Contact) ([]dest.Outcome, error) {
	return nil, nil
}
func (listOnly) Remove(_ context.Context, _ string, emails []string) ([]dest.Outcome, error) {
	out := make([]dest.Outcome, len(emails))
	for i, e := range emails {
		out[i] = dest.Outcome{Email: e, Status: dest.Sent}
	}
	return out, nil
}
func (listOnly) Stats() dest.Stats { return dest.Stats{} }

type queueFixture struct {
	t       *testing.T
	st      *store.Folder
	starter *asyncStarter
	svc     *run.Service
	now     time.Time
}

func newQueueFixture(t *testing.T) *queueFixture {
	t.Helper()
	st, err := store.NewFolder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &queueFixture{t: t, st: st, starter: &asyncStarter{}, now: time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)}
	f.svc = f.service()
	f.put(run.ConfigKey, queueConfig)
	return f
}

// service is one more ingest or finalize container on the same bucket.
func (f *queueFixture) service() *run.Service {
	return &run.Service{Store: f.st, Starter: f.starter, TempDir: f.t.TempDir(),
		Connect: func(context.Context, config.Connection, float64) (run.Destination, error) { return listOnly{}, nil },
		Now:     func() time.Time { return f.now }}
}

func (f *queueFixture) put(key, body string) store.ObjectInfo {
	f.t.Helper()
	info, err := f.st.Put(context.Background(), key, strings.NewReader(body), store.PutOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return info
}

// arrive drops a segment file and delivers its event, arrived at minute m.
func (f *queueFixture) arrive(svc *run.Service, name string, m int, emails ...string) run.Result {
	f.t.Helper()
	key := "segments/vip/" + name
	info := f.put(key, "Email\n"+strings.Join(emails, "\n")+"\n")
	return f.deliver(svc, run.Source{Key: key, ETag: info.ETag, Size: info.Size}, m)
}

func (f *queueFixture) deliver(svc *run.Service, src run.Source, m int) run.Result {
	f.t.Helper()
	res, err := svc.Start(context.Background(), run.StartRequest{Trigger: run.TriggerS3, Source: src,
		Arrived: time.Date(2026, 11, 29, 7, m, 0, 0, time.UTC)})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(res) != 1 {
		f.t.Fatalf("results %+v", res)
	}
	return res[0]
}

// finish plays the execution's end: finalize (its batches never ran, so the
// run fails, which is enough to free the lock).
func (f *queueFixture) finish(svc *run.Service, runID string) {
	f.t.Helper()
	if _, err := svc.Finalize(context.Background(), run.FinalizeInput{Export: "vip", RunID: runID}); err != nil {
		f.t.Fatal(err)
	}
}

func TestQueueRunsOneAtATimeInArrivalOrder(t *testing.T) {
	t.Parallel()
	f := newQueueFixture(t)
	a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
	if a.Status != run.StatusRunning || !a.Started {
		t.Fatalf("first file: %+v", a)
	}
	// Two more files arrive while a runs; c's event is delivered first.
	ingest := f.service()
	c := f.arrive(ingest, "c.csv", 3, "c@example.com")
	b := f.arrive(ingest, "b.csv", 2, "b@example.com")
	for _, r := range []run.Result{b, c} {
		if r.Status != run.StatusQueued || r.Started {
			t.Fatalf("file arriving during a run: %+v", r)
		}
	}
	// A duplicate delivery of a's event starts nothing.
	if again := f.arrive(ingest, "a.csv", 1, "a@example.com"); again.Started {
		t.Fatalf("duplicate event started a run: %+v", again)
	}
	if got := f.starter.runs(); len(got) != 1 || got[0] != a.RunID {
		t.Fatalf("executions %v, want only %s", got, a.RunID)
	}

	// a's finalize starts b (arrived before c), b's starts c.
	f.finish(f.service(), a.RunID)
	f.finish(f.service(), b.RunID)
	if got, want := f.starter.runs(), []string{a.RunID, b.RunID, c.RunID}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("executions %v, want %v", got, want)
	}
	f.finish(f.service(), c.RunID)

	// A late event for a file older than c is skipped, with a report saying why.
	old := f.arrive(ingest, "old.csv", 0, "old@example.com")
	if old.Status != run.StatusSuperseded || old.Started {
		t.Fatalf("older file after a newer one: %+v", old)
	}
	rep, err := run.ReadReport(context.Background(), f.st, "vip", old.RunID)
	if err != nil || rep.Status != run.StatusSuperseded || !strings.Contains(rep.Message, "c.csv") {
		t.Fatalf("report of the skipped file: %+v, %v", rep, err)
	}
	// Re-delivering the newest file's event is a retry, not an older file.
	if again := f.deliver(ingest, run.Source{Key: "segments/vip/c.csv", ETag: md5Of("Email\nc@example.com\n")}, 3); again.Status == run.StatusSuperseded {
		t.Fatalf("retry of the newest file: %+v", again)
	}
	if n := len(f.starter.runs()); n != 4 {
		t.Fatalf("%d executions, want 4 (the retry of the failed run c starts again)", n)
	}
}

func TestQueueTakesOverStaleLocks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		lock string
		age  time.Duration
		want string // status of the new file's run
	}{
		{"drainer died minutes ago", `{"holder":"drainer:x","owner":"o","since":"%s"}`, 5 * time.Minute, run.StatusQueued},
		{"drainer died long ago", `{"holder":"drainer:x","owner":"o","since":"%s"}`, 30 * time.Minute, run.StatusRunning},
		{"run without a report", `{"holder":"vip-0123","owner":"o","since":"%s"}`, time.Hour, run.StatusQueued},
		{"run past a day", `{"holder":"vip-0123","owner":"o","since":"%s"}`, 25 * time.Hour, run.StatusRunning},
		// handed the lock, then died before starting its execution
		{"run never started, minutes ago", `{"holder":"vip-0123","execution":"vip-0123","owner":"o","since":"%s"}`, 5 * time.Minute, run.StatusQueued},
		{"run never started, long ago", `{"holder":"vip-0123","execution":"vip-0123","owner":"o","since":"%s"}`, 30 * time.Minute, run.StatusRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newQueueFixture(t)
			since := f.now.Add(-tt.age).Format(time.RFC3339)
			f.put("state/vip/lock.json", strings.Replace(tt.lock, "%s", since, 1))
			if got := f.arrive(f.svc, "a.csv", 1, "a@example.com"); got.Status != tt.want {
				t.Fatalf("status %s (%s), want %s", got.Status, got.Message, tt.want)
			}
		})
	}

	t.Run("run stopped by hand", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		if got := f.arrive(f.svc, "b.csv", 2, "b@example.com"); got.Status != run.StatusQueued {
			t.Fatalf("b while a runs: %s (%s), want queued", got.Status, got.Message)
		}
		f.starter.stop(a.RunID, f.now)
		// Its batches in flight still finish: nothing takes over yet.
		f.now = f.now.Add(time.Minute)
		if c := f.arrive(f.svc, "c.csv", 3, "c@example.com"); c.Status != run.StatusQueued || len(f.starter.runs()) != 1 {
			t.Fatalf("c a minute after a was stopped: %s (%s), %d runs; want queued behind a", c.Status, c.Message, len(f.starter.runs()))
		}
		// d's event finds a's lock stale and starts b, which waited
		// longest; c and d queue behind b.
		f.now = f.now.Add(20 * time.Minute)
		if d := f.arrive(f.svc, "d.csv", 4, "d@example.com"); d.Status != run.StatusQueued {
			t.Fatalf("d after a was stopped: %s (%s), want queued", d.Status, d.Message)
		}
		if runs := f.starter.runs(); len(runs) != 2 || runs[0] != a.RunID || !strings.HasPrefix(runs[1], "vip-") || runs[1] == a.RunID {
			t.Fatalf("started %v, want a then b", runs)
		}
		rep, err := run.ReadReport(context.Background(), f.st, "vip", a.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "stopped by hand") || rep.FinishedAt.IsZero() {
			t.Fatalf("a's report: %s %q, want failed, saying why", rep.Status, rep.Message)
		}
	})

	t.Run("stopped run whose takeover could not write its report", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		f.starter.stop(a.RunID, f.now)
		f.now = f.now.Add(20 * time.Minute)
		// The drainer that takes a's lock over cannot write a's report (an
		// S3 error, or its Lambda dies right after the takeover).
		flaky := f.service()
		flaky.Store = failingPut{ObjectStore: f.st, key: "runs/vip/" + a.RunID + "/report.json"}
		b := f.arrive(flaky, "b.csv", 2, "b@example.com")
		if _, err := run.ReadReport(context.Background(), f.st, "vip", a.RunID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a's report after the failed write: %v, want none yet", err)
		}
		// Whoever holds the lock next writes it.
		f.finish(f.service(), b.RunID)
		rep, err := run.ReadReport(context.Background(), f.st, "vip", a.RunID)
		if err != nil || rep.Status != run.StatusFailed || !strings.Contains(rep.Message, "stopped by hand") {
			t.Fatalf("a's report: %+v, %v; want failed, saying why", rep, err)
		}
	})

	t.Run("run state unknown", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		f.starter.stop(a.RunID, f.now.Add(-time.Hour))
		f.starter.mu.Lock()
		f.starter.stateErr = errors.New("AccessDeniedException")
		f.starter.mu.Unlock()
		if got := f.arrive(f.svc, "b.csv", 2, "b@example.com"); got.Status != run.StatusQueued {
			t.Fatalf("b: %s (%s), want queued: without an answer, wait", got.Status, got.Message)
		}
	})

	t.Run("stopped run's own file again", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		f.starter.stop(a.RunID, f.now)
		f.now = f.now.Add(20 * time.Minute)
		again := f.arrive(f.svc, "a.csv", 5, "a@example.com") // e.g. a manual refresh of the newest file
		if again.RunID != a.RunID || again.Status != run.StatusRunning || !again.Started {
			t.Fatalf("the stopped run's file again: %+v; want run %s started anew", again, a.RunID)
		}
		if runs := f.starter.runs(); len(runs) != 2 || runs[1] != a.RunID || f.starter.execution(a.RunID) == a.RunID {
			t.Fatalf("started %v (latest execution %s), want a again under a new execution name", runs, f.starter.execution(a.RunID))
		}
		// The retry holds the lock now: a new file waits for it.
		if c := f.arrive(f.svc, "c.csv", 6, "c@example.com"); c.Status != run.StatusQueued || len(f.starter.runs()) != 2 {
			t.Fatalf("c during a's retry: %+v (runs %v); want queued", c, f.starter.runs())
		}
	})

	t.Run("own file while its start is under way", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		f.starter.forget(a.RunID) // its drainer holds the lock but has not called StartExecution yet
		if dup := f.arrive(f.svc, "a.csv", 1, "a@example.com"); dup.Status != run.StatusQueued || dup.Started {
			t.Fatalf("duplicate while a's start is under way: %+v; want queued, not a second start", dup)
		}
		if runs := f.starter.runs(); len(runs) != 1 {
			t.Fatalf("started %v; want only the first", runs)
		}
	})

	t.Run("same file while its retry runs", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		f.finish(f.svc, a.RunID) // its batches never ran: the run failed
		f.now = f.now.Add(time.Minute)
		if retry := f.arrive(f.svc, "a.csv", 5, "a@example.com"); retry.Status != run.StatusRunning || !retry.Started {
			t.Fatalf("retry of the failed run: %+v; want started", retry)
		}
		f.now = f.now.Add(time.Minute)
		dup := f.arrive(f.svc, "a.csv", 6, "a@example.com")
		if dup.Status != run.StatusRunning || dup.Started || !strings.Contains(dup.Message, "already in progress") {
			t.Fatalf("the same file while its retry runs: %+v; want running, not started again", dup)
		}
		if runs := f.starter.runs(); len(runs) != 2 {
			t.Fatalf("started %v; want the first attempt and one retry, never two at once", runs)
		}
	})

	t.Run("run whose start was lost", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		f.starter.forget(a.RunID) // the drainer died between taking the lock and StartExecution
		f.now = f.now.Add(30 * time.Minute)
		if b := f.arrive(f.svc, "b.csv", 2, "b@example.com"); b.Status != run.StatusQueued {
			t.Fatalf("b: %s (%s), want queued behind a, queued again", b.Status, b.Message)
		}
		if runs := f.starter.runs(); len(runs) != 2 || runs[1] != a.RunID {
			t.Fatalf("started %v, want a, then a again (its file was queued again), not lost", runs)
		}
	})

	t.Run("run that finished without releasing", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "a@example.com")
		// Its finalize wrote the report, then died before releasing.
		rep := run.Report{Export: "vip", RunID: a.RunID, Status: run.StatusSucceeded, FinishedAt: f.now.Add(time.Minute)}
		b, _ := json.Marshal(rep)
		f.put("runs/vip/"+a.RunID+"/report.json", string(b))
		f.now = f.now.Add(2 * time.Minute)
		if got := f.arrive(f.svc, "b.csv", 2, "b@example.com"); got.Status != run.StatusRunning {
			t.Fatalf("status %s (%s), want running", got.Status, got.Message)
		}
	})
}

// TestFinalizePromotesOnlyUnderTheLock: a finalize that runs after its run
// lost the export's lock (a redriven execution) must not put its snapshot
// over a newer run's; a retried finalize that promoted before still says so.
func TestFinalizePromotesOnlyUnderTheLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	snapshot := func(f *queueFixture) string {
		t.Helper()
		rc, _, err := f.st.Get(ctx, "state/vip/snapshot")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	newer := "newer@example.com\t0123456789abcdef0123456789abcdef\n"

	t.Run("after a takeover", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		// Only invalid rows: nothing to send, so the run succeeds at finalize.
		a := f.arrive(f.svc, "a.csv", 1, "not-an-email")
		f.starter.stop(a.RunID, f.now)
		f.now = f.now.Add(20 * time.Minute)
		f.arrive(f.svc, "b.csv", 2, "b@example.com") // takes a's lock over
		f.put("state/vip/snapshot", newer)
		rep, err := f.svc.Finalize(ctx, run.FinalizeInput{Export: "vip", RunID: a.RunID}) // a redriven
		if err != nil {
			t.Fatal(err)
		}
		if rep.Status != run.StatusSucceeded || rep.SnapshotPromoted || !strings.Contains(rep.Message, "not promoted") {
			t.Fatalf("late finalize: %s promoted=%v %q; want succeeded, not promoted, saying why", rep.Status, rep.SnapshotPromoted, rep.Message)
		}
		if got := snapshot(f); got != newer {
			t.Fatalf("snapshot %q, want the newer run's kept", got)
		}
	})

	t.Run("a retried finalize", func(t *testing.T) {
		t.Parallel()
		f := newQueueFixture(t)
		a := f.arrive(f.svc, "a.csv", 1, "not-an-email")
		f.finish(f.svc, a.RunID) // promotes and frees the lock
		f.put("state/vip/snapshot", newer)
		rep, err := f.svc.Finalize(ctx, run.FinalizeInput{Export: "vip", RunID: a.RunID})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.SnapshotPromoted || snapshot(f) != newer {
			t.Fatalf("retried finalize: promoted=%v, snapshot %q; want still promoted and the newer snapshot kept", rep.SnapshotPromoted, snapshot(f))
		}
	})
}

// failingPut is a store whose writes of one key fail.
type failingPut struct {
	store.ObjectStore
	key string
}

func (f failingPut) Put(ctx context.Context, key string, body io.Reader, opts store.PutOptions) (store.ObjectInfo, error) {
	if key == f.key {
		return store.ObjectInfo{}, errors.New("injected: S3 unavailable")
	}
	return f.ObjectStore.Put(ctx, key, body, opts)
}

func md5Of(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
