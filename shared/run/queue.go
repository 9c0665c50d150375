package run

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/clock"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/store"
)

// One run per export at a time, files in arrival order.
//
// Each request to run an export is first written to the export's queue,
// state/<export>/queue/<arrival>-<run>.json; then whoever takes the export's
// lock, state/<export>/lock.json, drains the queue oldest first. Starting an
// execution hands the lock to that run; its finalize releases it and drains
// what arrived meanwhile. Because requests are queued before the lock is
// read and the lock is released before the queue is read, a request is
// always seen by someone. The lock changes only by conditional writes
// (If-None-Match / If-Match), so two drainers never both win.
//
// A file older than the newest one already started is skipped as
// superseded: running it late would put older data over newer.

// Lock holders that never released become stale: a drainer that died
// (Lambda's limit is 15 minutes) or a run that never reached finalize. When
// the Starter is a RunChecker, a run whose execution has ended (stopped by
// hand, timed out, or its finalize failed for good) is stale once the
// Lambda invocations it had in flight are done (stopping an execution does
// not stop them: syncbatch may run 300 s, finalize 900 s), one whose
// execution never started once no drainer can still be starting it (its
// file is queued again), and one confirmed running is never stale.
const (
	staleDrainAfter = 20 * time.Minute
	staleRunAfter   = 24 * time.Hour
	endedGrace      = 16 * time.Minute
	drainerPrefix   = "drainer:"
)

// verdict is what a drainer may do with a held lock.
type verdict int

const (
	wait      verdict = iota // the holder still works (or may)
	ownRun                   // wait: the holder is the run asked for, and its execution runs
	take                     // the holder will never release
	reenter                  // the holder is the run asked for, and nothing can tell whether it started: trust the retry
	abandoned                // take, and write the report of the holder's ended run
	lost                     // take, and queue again the file whose run never started
)

// StatusQueued and StatusSuperseded are Result statuses of the queue.
const (
	StatusQueued     = "queued"     // another run of the export is in progress; this one follows it
	StatusSuperseded = "superseded" // a newer file was already exported; this older one is skipped
)

func lockKey(export string) string     { return "state/" + export + "/lock.json" }
func queuePrefix(export string) string { return "state/" + export + "/queue/" }

// lockState is lock.json.
type lockState struct {
	Holder    string      `json:"holder,omitempty"`    // a run id or a drainer; empty: free
	Execution string      `json:"execution,omitempty"` // the holding run's execution name (a retry's differs from its run id)
	Owner     string      `json:"owner,omitempty"`     // the Service instance that wrote it
	Since     time.Time   `json:"since"`
	Latest    *queueEntry `json:"latest,omitempty"` // the newest request started
}

// queueEntry is one waiting request.
type queueEntry struct {
	Trigger           string    `json:"trigger"`
	Source            Source    `json:"source"`
	Arrived           time.Time `json:"arrived"`
	AllowLargeRemoval bool      `json:"allowLargeRemoval,omitempty"`
	key               string
}

// request is the start request q was queued for.
func (q *queueEntry) request(export string) StartRequest {
	return StartRequest{Trigger: q.Trigger, Source: q.Source, Export: export, Arrived: q.Arrived, AllowLargeRemoval: q.AllowLargeRemoval}
}

func (q *queueEntry) sameFile(o *queueEntry) bool {
	return q.Source.Key == o.Source.Key && q.Source.ETag == o.Source.ETag && q.Source.VersionID == o.Source.VersionID
}

// lock is a held lock: its state and the ETag that proves it is ours.
type lock struct {
	export string
	etag   string
	state  lockState
}

// enqueue records a request. The key is deterministic (arrival time and
// object), so a duplicate event delivery writes the same entry.
func (s *Service) enqueue(ctx context.Context, export string, req StartRequest) (string, error) {
	e := queueEntry{Trigger: req.Trigger, Source: req.Source, Arrived: req.Arrived.UTC(), AllowLargeRemoval: req.AllowLargeRemoval}
	id := RunID(export, req.Source, "")
	key := queuePrefix(export) + e.Arrived.Format("20060102T150405.000000000Z") + "-" + strings.TrimPrefix(id, export+"-") + ".json"
	if err := putJSON(ctx, s.Store, key, e, store.PutOptions{}); err != nil {
		return "", fmt.Errorf("queueing %s: %w", req.Source.Key, err)
	}
	return key, nil
}

// busy says who holds an export's lock; running when it is the very run a
// drain was asked for and its execution is known to run.
type busy struct {
	holder  string
	running bool
	owner   string    // the process (local mode) or Service that wrote the lock
	since   time.Time // when it took the lock
}

// String describes the holder for a person waiting on it.
func (b busy) String() string {
	who := "run " + b.holder
	if strings.HasPrefix(b.holder, drainerPrefix) || b.holder == "" {
		who = "another segpilot starting a run"
	}
	if !b.since.IsZero() {
		who += " since " + b.since.Format(time.RFC3339)
	}
	if strings.HasPrefix(b.owner, "pid=") {
		who += ", in process " + b.owner
	}
	return who
}

// acquire takes the export's lock for a drainer, or reports who holds it.
// A lock held by runID itself is taken over when that run's start was
// interrupted (this is its retry) or its execution has ended; while that
// execution runs, runID waits like any other request.
func (s *Service) acquire(ctx context.Context, export, runID string) (*lock, busy, error) {
	me := drainerPrefix + randomID()
	cur, etag, err := s.readLock(ctx, export)
	switch {
	case errors.Is(err, store.ErrNotFound):
		l := &lock{export: export, state: lockState{Holder: me, Owner: s.instance(), Since: s.now()}}
		got, err := s.swapLock(ctx, l, true)
		return got, busy{}, err
	case err != nil:
		return nil, busy{}, err
	}
	v := take // a free lock
	if cur.Holder != "" {
		if v, err = s.judge(ctx, export, runID, cur); err != nil {
			return nil, busy{}, err
		}
		if v == wait || v == ownRun {
			return nil, busy{holder: cur.Holder, running: v == ownRun, owner: cur.Owner, since: cur.Since}, nil
		}
		if v != reenter {
			s.Logger().Warn("taking over a stale lock", "export", export, "run", cur.Holder, "since", cur.Since)
		}
	}
	if v == lost {
		// Before the lock changes, so the file cannot be forgotten: the
		// queue key is deterministic, and whoever wins the lock runs it.
		if err := s.requeue(ctx, export, cur.Latest); err != nil {
			return nil, busy{}, err
		}
	}
	l := &lock{export: export, etag: etag, state: lockState{Holder: me, Owner: s.instance(), Since: s.now(), Latest: cur.Latest}}
	got, err := s.swapLock(ctx, l, false)
	if err != nil || got == nil {
		return got, busy{}, err
	}
	if v == abandoned {
		// Only now that the lock is ours, so nobody else acts on the old
		// holder. The report is a record, not a gate: failing to write it
		// must not block the export.
		if err := s.markAbandoned(ctx, export, cur); err != nil {
			s.Logger().Error("recording the end of a stopped run", "export", export, "run", cur.Holder, "error", err)
		}
	}
	return got, busy{}, nil
}

// swapLock writes l.state over the lock (create-only when create is set,
// else only if it still has l.etag). Losing the race is not an error: it
// returns nil, and the winner drains.
func (s *Service) swapLock(ctx context.Context, l *lock, create bool) (*lock, error) {
	b, err := json.Marshal(l.state)
	if err != nil {
		return nil, err
	}
	opts := store.PutOptions{ContentType: "application/json", IfNoneMatch: create, IfMatch: l.etag}
	info, err := s.Store.Put(ctx, lockKey(l.export), bytes.NewReader(b), opts)
	if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrChanged) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("taking the lock of export %s: %w", l.export, err)
	}
	l.etag = info.ETag
	return l, nil
}

func (s *Service) readLock(ctx context.Context, export string) (lockState, string, error) {
	rc, info, err := s.Store.Get(ctx, lockKey(export))
	if err != nil {
		return lockState{}, "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return lockState{}, "", fmt.Errorf("reading %s: %w", lockKey(export), err)
	}
	var st lockState
	if err := json.Unmarshal(b, &st); err != nil {
		return lockState{}, "", fmt.Errorf("decoding %s: %w (delete it to unblock the export)", lockKey(export), err)
	}
	return st, info.ETag, nil
}

// judge decides about a held lock, for a drain asked for runID: in local
// mode, by whether the process that holds it still runs; else a drainer
// past any Lambda's lifetime, or a run that has finished, has ended
// without finishing, never started, or is long past due.
func (s *Service) judge(ctx context.Context, export, runID string, st lockState) (verdict, error) {
	self := runID != "" && st.Holder == runID
	drainer := strings.HasPrefix(st.Holder, drainerPrefix)
	if s.Processes != nil {
		alive, err := s.Processes.Alive(st.Owner)
		switch {
		case err != nil:
			s.Logger().Warn("cannot tell whether the process holding the export's lock still runs; waiting for it "+
				"(delete "+lockKey(export)+" if it is gone)", "export", export, "run", st.Holder, "owner", st.Owner, "error", err)
			return wait, nil
		case alive && self && !drainer:
			return ownRun, nil
		case alive:
			return wait, nil
		case drainer:
			return take, nil
		}
		return abandoned, nil // killed mid-run: its report says so, and a rerun resumes its plan
	}
	age := s.now().Sub(st.Since)
	if drainer {
		if age > staleDrainAfter {
			return take, nil
		}
		return wait, nil
	}
	rep, err := ReadReport(ctx, s.Store, export, st.Holder)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return wait, err
	case rep.Status != StatusRunning && rep.FinishedAt.After(st.Since):
		return take, nil
	}
	checker, ok := s.Starter.(RunChecker)
	if !ok || st.Execution == "" {
		switch {
		case age > staleRunAfter:
			return take, nil
		case self:
			return reenter, nil // no way to ask (or a lock from before executions were recorded): trust the retry
		}
		return wait, nil
	}
	status, err := checker.RunStatus(ctx, st.Execution)
	if err != nil {
		// Not knowing is not a reason to run two at once.
		s.Logger().Warn("cannot tell whether the run holding the export's lock still goes on; waiting for it",
			"export", export, "run", st.Holder, "error", err)
		if age > staleRunAfter {
			return take, nil
		}
		return wait, nil
	}
	switch status.State {
	case RunActive: // however long: a second execution beside it is what the lock is for
		if self {
			return ownRun, nil
		}
	case RunEnded:
		if s.now().Sub(status.EndedAt) > endedGrace {
			return abandoned, nil
		}
	case RunNotStarted:
		// Also for the run asked for: its drainer may be about to start it.
		if age > staleDrainAfter {
			return lost, nil
		}
	}
	return wait, nil
}

// requeue queues again the request whose run took the lock but never
// started (its drainer died in between, after removing it from the queue).
func (s *Service) requeue(ctx context.Context, export string, e *queueEntry) error {
	if e == nil {
		return nil
	}
	_, err := s.enqueue(ctx, export, e.request(export))
	return err
}

// markAbandoned writes the report of the run that held st, whose execution
// ended without its finalize (which writes reports): otherwise the run
// would have none, or an earlier attempt's.
func (s *Service) markAbandoned(ctx context.Context, export string, st lockState) error {
	rep, err := ReadReport(ctx, s.Store, export, st.Holder)
	switch {
	case err == nil && rep.FinishedAt.After(st.Since):
		return nil // its finalize did write one after all (judge's test of a final report)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	m, err := s.readManifest(ctx, export, st.Holder)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("recording the end of run %s: %w", st.Holder, err)
	}
	abandoned := Report{Export: m.Export, RunID: m.RunID, Trigger: m.Trigger, Source: m.Source,
		ConfigVersion: m.ConfigVersion, Mode: m.Mode, List: m.List, Plan: m.Counts, PlannedAt: m.PlannedAt,
		Status: StatusFailed, FinishedAt: s.now(), Message: s.endedEarly(st) +
			": what it sent is not counted here; run the file again to resume it (settled batches are not sent again), " +
			"and any later run diffs against the last promoted snapshot, so nothing is lost"}
	return s.writeReport(ctx, &abandoned)
}

// endedEarly says how the run holding st ended without finalizing.
func (s *Service) endedEarly(st lockState) string {
	if s.Processes != nil {
		return "the segpilot process running it (" + st.Owner + ") ended before the run finished (killed or crashed)"
	}
	return "execution " + st.Execution + " ended before the run finished (stopped by hand, timed out, or its finalize failed)"
}

// handOver gives the lock to the run about to start (as execution) and
// records its file as the newest started.
func (s *Service) handOver(ctx context.Context, l *lock, runID, execution string, e *queueEntry) error {
	next := *l
	next.state = lockState{Holder: runID, Execution: execution, Owner: s.instance(), Since: s.now(), Latest: e}
	got, err := s.swapLock(ctx, &next, false)
	if err != nil {
		return err
	}
	if got == nil {
		return fmt.Errorf("export %s: lost the lock (taken over as stale) before starting run %s", l.export, runID)
	}
	*l = *got
	return nil
}

// release frees the lock if holder still holds it.
func (s *Service) release(ctx context.Context, export, holder string) error {
	cur, etag, err := s.readLock(ctx, export)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur.Holder != holder {
		return nil // taken over as stale; the new holder releases
	}
	l := &lock{export: export, etag: etag, state: lockState{Owner: s.instance(), Since: s.now(), Latest: cur.Latest}}
	_, err = s.swapLock(ctx, l, false)
	return err
}

// oldest returns the export's longest-waiting request, or nil. Queue keys
// begin with the fixed-width arrival time, so key order is arrival order.
func (s *Service) oldest(ctx context.Context, export string) (*queueEntry, error) {
	objs, err := s.Store.List(ctx, queuePrefix(export))
	if err != nil {
		return nil, fmt.Errorf("listing the queue of export %s: %w", export, err)
	}
	for _, o := range objs {
		var e queueEntry
		if err := getJSON(ctx, s.Store, o.Key, &e); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue // taken by a drainer since the listing
			}
			return nil, err
		}
		e.key = o.Key
		return &e, nil
	}
	return nil, nil
}

// submit queues a request and, if the export is idle, drains its queue.
// It returns the request's own result: done, started, queued, or running
// elsewhere (Await waits for the last two).
func (s *Service) submit(ctx context.Context, cfg *config.Config, e *config.Export, req StartRequest) (Result, error) {
	if req.Arrived.IsZero() {
		req.Arrived = s.now()
	}
	runID := RunID(e.Name, req.Source, cfg.Version)
	key, err := s.enqueue(ctx, e.Name, req)
	if err != nil {
		return Result{Export: e.Name, RunID: runID, Status: StatusFailed, Message: err.Error()}, err
	}
	results, held, err := s.drain(ctx, cfg, e.Name, runID)
	if res, ok := ownResult(results, key, runID); ok || err != nil {
		if err != nil && !ok {
			res = Result{Export: e.Name, RunID: runID, Status: StatusFailed, Message: err.Error()}
		}
		return res, err
	}
	res := Result{Export: e.Name, RunID: runID, Status: StatusQueued, Queued: key, queuedAt: s.now(),
		Message: "another run of this export is in progress (" + held.String() + "); this file runs when it ends"}
	if held.holder == runID && !held.running {
		res.Message = "this file's run holds the export's lock, but whether it runs cannot be told yet; this request stays queued"
	}
	if held.running {
		// This very run is in progress: nothing to wait for, and nothing to
		// run again after it (the schedule retries a run that failed).
		if err := s.Store.Delete(ctx, key); err != nil {
			return Result{}, fmt.Errorf("removing %s from the queue: %w", key, err)
		}
		res.Status, res.Queued = StatusRunning, ""
		res.Message = "this file's run is already in progress (" + held.String() + ")"
	}
	return res, nil
}

// ownResult picks a request's result from a drain's: its own entry's, or
// that of an earlier entry for the same file (an attempt that failed, or
// was left queued, ran first and this one found it done).
func ownResult(results map[string]Result, key, runID string) (Result, bool) {
	if res, ok := results[key]; ok && res.Status != StatusUpToDate {
		return res, true
	}
	for _, k := range slices.Sorted(maps.Keys(results)) {
		if res := results[k]; res.RunID == runID && res.Status != StatusUpToDate {
			return res, true
		}
	}
	res, ok := results[key]
	return res, ok
}

// Await waits for a request that Start left queued, or found running in
// another process or execution, and returns how it ended. It takes part
// in draining the queue, so a holder that died is taken over here.
func (s *Service) Await(ctx context.Context, res Result, poll time.Duration) (Result, error) {
	if res.Status != StatusQueued && (res.Status != StatusRunning || res.Started) {
		return res, nil
	}
	for {
		if err := clock.Sleep(ctx, poll); err != nil {
			return res, err
		}
		cfg, err := LoadConfig(ctx, s.Store)
		if err != nil {
			return res, err
		}
		results, held, err := s.drain(ctx, cfg, res.Export, res.RunID)
		if err != nil {
			return res, err
		}
		if got, ok := ownResult(results, res.Queued, res.RunID); ok {
			return got, nil
		}
		if res.Queued != "" {
			switch _, err := s.Store.Head(ctx, res.Queued); {
			case err == nil:
				continue // still waiting its turn
			case !errors.Is(err, store.ErrNotFound):
				return res, err
			}
		}
		if held.holder == res.RunID {
			continue // its run goes on
		}
		// Another process ran it: its report tells how.
		rep, err := ReadReport(ctx, s.Store, res.Export, res.RunID)
		if err != nil {
			return res, fmt.Errorf("run %s left the queue, but its report cannot be read: %w", res.RunID, err)
		}
		done := Result{Export: res.Export, RunID: res.RunID, Status: rep.Status, Message: rep.Message, Counts: rep.Plan}
		if rep.Status == StatusSucceeded && cmp.Or(rep.StartedAt, rep.FinishedAt).Before(res.queuedAt) {
			// A run of this file that was already going (or done) when this
			// request came did the work: nothing was left for this one.
			done.Status = StatusUpToDate
			done.Message = "this file was exported by a run already under way when this request came (another process's or an earlier trigger's); nothing more to send"
		}
		return done, nil
	}
}

// drain takes the export's lock and works through its queue until a run
// starts (the lock passes to it) or the queue is empty (the lock is freed).
// It returns the results by queue key, or who holds the lock. runID, when
// set, is the run this drain was asked for (see acquire).
func (s *Service) drain(ctx context.Context, cfg *config.Config, export, runID string) (map[string]Result, busy, error) {
	results := map[string]Result{}
	for {
		l, held, err := s.acquire(ctx, export, runID)
		if err != nil || l == nil {
			return results, held, err
		}
		started, err := s.drainHeld(ctx, cfg, l, results)
		if err != nil {
			// Also when ctx was cancelled (Ctrl-C): the lock must not stay held.
			if rerr := s.release(context.WithoutCancel(ctx), export, l.state.Holder); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return results, busy{}, err
		}
		if started {
			return results, busy{holder: l.state.Holder}, nil
		}
		if err := s.release(ctx, export, l.state.Holder); err != nil {
			return results, busy{}, err
		}
		// A request queued between our last look and the release found the
		// lock held and left it to us: look once more.
		if next, err := s.oldest(ctx, export); err != nil || next == nil {
			return results, busy{}, err
		}
	}
}

// drainHeld runs queued requests while holding l; true once a run started.
func (s *Service) drainHeld(ctx context.Context, cfg *config.Config, l *lock, results map[string]Result) (bool, error) {
	for {
		q, err := s.oldest(ctx, l.export)
		if err != nil || q == nil {
			return false, err
		}
		res, started, err := s.runQueued(ctx, cfg, l, q)
		if err != nil {
			if res.Status != "" {
				results[q.key] = res // how the attempt ended, as its report says
			}
			return false, err
		}
		results[q.key] = res
		s.Logger().Info("run "+res.Status, "export", res.Export, "run", res.RunID, "status", res.Status, "message", res.Message)
		if started {
			return true, nil
		}
		if err := s.Store.Delete(ctx, q.key); err != nil {
			return false, fmt.Errorf("removing %s from the queue: %w", q.key, err)
		}
	}
}

// runQueued starts one queued request under the lock.
func (s *Service) runQueued(ctx context.Context, cfg *config.Config, l *lock, q *queueEntry) (Result, bool, error) {
	e, err := cfg.Export(l.export)
	if err != nil {
		return Result{Export: l.export, Status: StatusRefused, Message: err.Error()}, false, nil
	}
	req := q.request(e.Name)
	if latest := l.state.Latest; latest != nil && q.Arrived.Before(latest.Arrived) && !q.sameFile(latest) {
		res, err := s.supersede(ctx, cfg, e, req, latest)
		return res, false, err
	}
	claimed := false
	claim := func(runID, execution string) error {
		if err := s.handOver(ctx, l, runID, execution, q); err != nil {
			return err
		}
		claimed = true
		// Gone before the run starts, so its finalize (synchronous in local
		// mode) does not find it again.
		return s.Store.Delete(ctx, q.key)
	}
	res, err := s.startExport(ctx, cfg, e, req, claim)
	if err != nil {
		if claimed {
			// Put the request back for the next attempt (Lambda retries the event).
			if _, qerr := s.enqueue(context.WithoutCancel(ctx), e.Name, req); qerr != nil {
				err = errors.Join(err, qerr)
			}
		}
		return res, false, err
	}
	if claimed && !res.Started {
		// The execution already existed. While it runs, its finalize frees
		// the lock; if it has finished, nobody will: go on draining.
		rep, rerr := ReadReport(ctx, s.Store, e.Name, res.RunID)
		if rerr == nil && rep.Status != StatusRunning && !rep.FinishedAt.IsZero() {
			return res, false, nil
		}
		return res, true, nil
	}
	if latest := l.state.Latest; res.Status == StatusUpToDate && latest != nil && !q.sameFile(latest) {
		res.Message += "; but a newer file, " + latest.Source.Key + ", has been exported since, so the list holds " +
			"that file's contacts (to export this one's again, put it under a new name)"
	}
	return res, res.Started, nil
}

// supersede records that an older file was skipped.
func (s *Service) supersede(ctx context.Context, cfg *config.Config, e *config.Export, req StartRequest, latest *queueEntry) (Result, error) {
	runID := RunID(e.Name, req.Source, cfg.Version)
	if prev, err := ReadReport(ctx, s.Store, e.Name, runID); err == nil && prev.Status == StatusSucceeded {
		return Result{Export: e.Name, RunID: runID, Status: StatusUpToDate, Counts: prev.Plan,
			Message: "this file was already exported with this configuration; nothing to send"}, nil
	}
	msg := fmt.Sprintf("skipped: %s arrived before %s, which was already exported; exporting the older file now would undo newer data",
		req.Source.Key, latest.Source.Key)
	rep := Report{Export: e.Name, RunID: runID, Trigger: req.Trigger, Source: req.Source, ConfigVersion: cfg.Version,
		Mode: e.Mode, List: e.List, Status: StatusSuperseded, Message: msg, FinishedAt: s.now()}
	if err := s.writeReport(ctx, &rep); err != nil {
		return Result{}, err
	}
	return Result{Export: e.Name, RunID: runID, Status: StatusSuperseded, Message: msg}, nil
}

// afterRun frees the lock a finished run held and starts what waited for it.
// Failures here do not fail the run: the requests stay queued and the next
// event or scheduled refresh drains them.
func (s *Service) afterRun(ctx context.Context, export, runID string) {
	log := s.Logger().With("export", export, "run", runID)
	if err := s.release(ctx, export, runID); err != nil {
		log.Error("releasing the export's lock", "error", err)
		return
	}
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		log.Error("starting queued runs", "error", err)
		return
	}
	if _, _, err := s.drain(ctx, cfg, export, ""); err != nil {
		log.Error("starting queued runs", "error", err, "status", "queued")
	}
}

// instance names this Service in the locks it writes: its process in
// local mode, else a random id.
func (s *Service) instance() string {
	if s.Processes != nil {
		return s.Processes.Self()
	}
	s.instanceOnce.Do(func() { s.instanceID = randomID() })
	return s.instanceID
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
