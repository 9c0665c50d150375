package run

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/delivery"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// StartRequest asks for runs of the exports that read one segment file.
type StartRequest struct {
	Trigger           string
	Source            Source
	Export            string // only this export; empty: every export of the segment
	DryRun            bool   // plan and report only
	AllowLargeRemoval bool   // lift the mirror safety brake for this run
	// FullResync sends every contact of the file, unchanged ones too: a
	// run of its own (its run id says so), leavers and brake as ever.
	FullResync bool
	// Undo is set by Undo: the run this delivery reverses (no file is read).
	Undo string
	// Arrived orders files of one export: the S3 event's time, or the
	// object's modification time; zero means now.
	Arrived time.Time
}

// Result is what became of one export's delivery, as far as this call saw.
type Result struct {
	Export  string      `json:"export"`
	RunID   string      `json:"runId,omitempty"`
	Status  string      `json:"status"`
	Message string      `json:"message,omitempty"`
	Counts  plan.Counts `json:"counts"`
	// Attempt is the attempt that runs (or ran) the delivery, once one
	// claimed it; Started is set when this call started its execution.
	Attempt int64 `json:"attempt,omitempty"`
	Started bool  `json:"started"`
	// Preview is a dry run's preview.csv: every contact's fate, and why.
	Preview string `json:"preview,omitempty"`
	// Queued is the delivery's queue key: Await follows it.
	Queued string `json:"-"`
}

// RunID is derived from the export, the object's identity and the config
// version, so every delivery of the same file names the same run.
//
// The ETag names the content; the version id is used only without one.
// Listing a versioned bucket reports no version id, so including it would
// give refresh a different id than the S3 event for the same file, and the
// same bytes put again are the same export.
func RunID(export string, src Source, configVersion string) string {
	return runID(export, src, configVersion, false)
}

// runID is RunID, of a full resync when full: a run of its own, so a file
// exported already is sent again, and a normal delivery of it after is
// up to date.
func runID(export string, src Source, configVersion string, full bool) string {
	if full {
		configVersion += "\x00full"
	}
	identity := src.ETag
	if identity == "" {
		identity = "version:" + src.VersionID
	}
	h := sha256.Sum256([]byte(strings.Join([]string{export, src.Key, identity, configVersion}, "\x00")))
	return export + "-" + hex.EncodeToString(h[:8])
}

// LoadConfig reads config/exports.yaml from the bucket.
func LoadConfig(ctx context.Context, st store.ObjectStore) (*config.Config, error) {
	rc, _, err := st.Get(ctx, ConfigKey)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w (upload your exports.yaml there)", ConfigKey, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ConfigKey, err)
	}
	return config.Load(ConfigKey, data)
}

// Start queues a segment file for every export that reads it and drains
// each export's queue (the ingest step). Exports are independent: one
// that fails is reported and the others go on; the error joins theirs.
func (s *Service) Start(ctx context.Context, req StartRequest) ([]Result, error) {
	seg, folder, err := s.deliveryOf(req.Source)
	if err != nil || seg == "" {
		return nil, err
	}
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	var exports []*config.Export
	if req.Export != "" {
		named, err := cfg.Named(req.Export) // a split export: each group
		if err != nil {
			return nil, err
		}
		if named[0].Segment != seg {
			return nil, fmt.Errorf("export %s reads segment %q, not %q", req.Export, named[0].Segment, seg)
		}
		exports = named
	} else {
		exports = cfg.ExportsForSegment(seg)
	}
	if len(exports) == 0 {
		s.Logger().Info("no export reads this segment", "segment", seg, "status", "ignored")
		return nil, nil
	}
	if folder == "" && req.Source.ETag == "" && req.Source.VersionID == "" {
		info, err := s.Store.Head(ctx, req.Source.Key)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", req.Source.Key, err)
		}
		req.Source.ETag, req.Source.VersionID, req.Source.Size = info.ETag, info.VersionID, info.Size
	}
	if req.Arrived.IsZero() {
		req.Arrived = s.now()
	}
	var results []Result
	var errs []error
	for _, e := range exports {
		var res Result
		r := req
		if folder != "" {
			// Whether the folder is whole depends on the export (its
			// quiet period); a part of it is no delivery of its own.
			var ok bool
			if r, res, ok, err = s.wholeFolder(ctx, e, req, folder); !ok {
				results = append(results, res)
				if err != nil {
					errs = append(errs, fmt.Errorf("export %s: %w", e.Name, err))
				}
				continue
			}
		}
		if r.DryRun {
			res, err = s.dryRun(ctx, cfg, e, r)
		} else {
			res, err = s.deliver(ctx, cfg, e, r)
		}
		results = append(results, res)
		if err != nil {
			s.Logger().Error("export "+e.Name, "export", e.Name, "run", res.RunID, "status", "error", "error", err)
			errs = append(errs, fmt.Errorf("export %s: %w", e.Name, err))
			continue
		}
		s.Logger().Info("delivery "+res.Status, "export", res.Export, "run", res.RunID, "status", res.Status, "message", res.Message)
	}
	return results, errors.Join(errs...)
}

// deliveryOf says which segment and delivery src belongs to: folder is ""
// for a single file, else the folder delivery's key; seg is "" for what is
// never a segment (a job's scratch, a checksum, a desktop's litter), which
// is logged and left alone.
func (s *Service) deliveryOf(src Source) (seg, folder string, err error) {
	if src.isFolder() { // refresh and the sweep name a folder delivery itself
		seg, _, err := delivery.Of(src.Key + "part")
		return seg, src.Key, err
	}
	kind := delivery.Classify(src.Key)
	seg, folder, err = delivery.Of(src.Key)
	switch {
	case err != nil:
		return "", "", err
	case kind == delivery.Ignored:
		s.Logger().Info("not a segment file: left alone", "key", src.Key, "status", "ignored")
		return "", "", nil
	case folder == "" && kind != delivery.Data:
		s.Logger().Warn("a "+kind.String()+" directly under segments/"+seg+"/ completes no folder: write each delivery of parts into a folder of its own",
			"key", src.Key, "status", "ignored")
		return "", "", nil
	}
	return seg, folder, nil
}

// wholeFolder turns an event about folder into e's request for the whole
// delivery, when it is whole (ok); else it records that e waits for it.
func (s *Service) wholeFolder(ctx context.Context, e *config.Export, req StartRequest, folder string) (StartRequest, Result, bool, error) {
	d, err := s.decideFolder(ctx, folder, e)
	if err != nil {
		return req, Result{Export: e.Name, Status: StatusFailed, Message: err.Error()}, false, err
	}
	if !d.Complete {
		res, err := s.waiting(ctx, e, d)
		return req, res, false, err
	}
	if err := s.Store.Delete(ctx, pendingKey(e.Name, folder)); err != nil && !errors.Is(err, store.ErrNotFound) {
		return req, Result{Export: e.Name, Status: StatusFailed, Message: err.Error()}, false, err
	}
	req.Source = folderSource(d)
	if req.Arrived.IsZero() {
		req.Arrived = d.Last
	}
	return req, Result{}, true, nil
}

// deliver queues req for e and drains e's queue.
func (s *Service) deliver(ctx context.Context, cfg *config.Config, e *config.Export, req StartRequest) (Result, error) {
	runID := runID(e.Name, req.Source, cfg.Version, req.FullResync)
	entry, err := s.enqueue(ctx, e.Name, req)
	if err != nil {
		return Result{Export: e.Name, RunID: runID, Status: StatusFailed, Message: err.Error()}, err
	}
	return s.drain(ctx, cfg, e.Name, &wanted{key: entry.Key, runID: runID})
}

// wanted is the delivery a drain reports on: its queue key and its run.
type wanted struct{ key, runID string }

// Kick drains an export's queue: kicks/<export> arrived (a run ended).
func (s *Service) Kick(ctx context.Context, export string) error {
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		return err
	}
	_, err = s.drain(ctx, cfg, export, nil)
	return err
}

// Sweep drains every export's queue: the sweep schedule's work. An attempt
// whose execution ended without freeing its export (its Map failed, or it
// was stopped by hand or timed out) is closed once its grace is over, and
// the files queued behind it run, without waiting for the next file or
// refresh. A folder of parts that became whole with no event (its quiet
// period over) runs, and one that waited too long is reported. One export
// failing does not stop the others. It returns the deliveries of folders
// it found whole.
func (s *Service) Sweep(ctx context.Context) ([]Result, error) {
	cfg, err := LoadConfig(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	var results []Result
	var errs []error
	for _, e := range exportsOf(cfg) {
		_, err := s.drain(ctx, cfg, e.Name, nil)
		if err == nil {
			var rs []Result
			rs, err = s.sweepPending(ctx, cfg, e)
			results = append(results, rs...)
		}
		if err != nil {
			s.Logger().Error("sweeping the export's queue", "export", e.Name, "error", err)
			errs = append(errs, fmt.Errorf("export %s: %w", e.Name, err))
		}
	}
	return results, errors.Join(errs...)
}

// drain works through the export's queue, oldest first, until an attempt
// holds the export (one it started, or one still going) or the queue is
// empty. It returns what became of want, the delivery the caller waits on
// (nil: none).
//
// Nothing here holds a lock while it works: each step reads state.json,
// decides from it, and makes its decision by one compare-and-swap; a swap
// that loses means the state moved, and the loop reads it again.
func (s *Service) drain(ctx context.Context, cfg *config.Config, export string, want *wanted) (Result, error) {
	res := Result{Export: export, Status: StatusQueued}
	if want != nil {
		res.RunID, res.Queued = want.runID, want.key
	}
	for {
		st, etag, err := s.readState(ctx, export)
		if err != nil {
			return res, s.stuck(ctx, cfg, export, want, err)
		}
		if h := st.Holder; h != nil {
			closed, err := s.settleHolder(ctx, export, st, etag)
			if err != nil {
				return res, err
			}
			if !closed {
				res.Status, res.Message = StatusQueued, busyMessage(h, res.RunID)
				return res, nil
			}
			continue
		}
		q, err := s.oldest(ctx, export)
		if err != nil {
			return res, err
		}
		if q == nil {
			if want == nil {
				return res, nil
			}
			return s.deliveryResult(ctx, res) // another drainer handled it
		}
		out, step, err := s.handle(ctx, cfg, export, st, etag, q)
		mine := want != nil && q.Key == want.key
		if mine && (step != stepRetry || out.Status != "") {
			res = out
		}
		if mine && step == stepRetry {
			res.Counts = out.Counts // still queued; what it would do is known
		}
		if err != nil {
			return res, err
		}
		switch {
		case step == stepRetry:
		case step == stepClaimed && !mine:
			return res, nil // the export is busy with the older delivery now
		case mine:
			return res, nil
		}
	}
}

func busyMessage(h *Holder, runID string) string {
	if h.Run == runID {
		return fmt.Sprintf("this file's run is in progress (attempt %d, execution %s); this delivery is handled when it ends", h.Attempt, h.Execution)
	}
	return fmt.Sprintf("another run of this export is in progress (run %s, attempt %d); this file runs when it ends", h.Run, h.Attempt)
}

// deliveryResult reads what another drainer made of res's delivery.
func (s *Service) deliveryResult(ctx context.Context, res Result) (Result, error) {
	var d Delivery
	if err := getJSON(ctx, s.Store, deliveryKey(res.Export, res.RunID, res.Queued[strings.LastIndexByte(res.Queued, '/')+1:]), &d); err != nil {
		return res, fmt.Errorf("delivery %s left the queue, but what became of it cannot be read: %w", res.Queued, err)
	}
	res.Status, res.Message, res.Attempt = d.Status, d.Message, d.Attempt
	return res, nil
}

// What handle did with a delivery.
type step int

const (
	stepDecided step = iota // decided without an attempt; the entry left the queue
	stepClaimed             // an attempt claimed the export for it
	stepRetry               // the state moved under us: read it again
)

// handle decides the oldest delivery q while the export is free: skip it
// (superseded, up to date), end it without sending (refused, invalid,
// held, the key refused), or plan it and claim the export for an attempt,
// then start that attempt's execution.
func (s *Service) handle(ctx context.Context, cfg *config.Config, export string, st exportState, etag string, q *queueEntry) (Result, step, error) {
	runID := q.runID(export, cfg.Version)
	res := Result{Export: export, RunID: runID, Queued: q.Key}
	d := decision{s: s, st: st, q: q, res: &res}
	e, err := cfg.Export(export)
	if err != nil {
		return d.decide(ctx, StatusRefused, "the export is no longer in the config: "+err.Error(), nil)
	}
	d.e = e
	prev, err := ReadReport(ctx, s.Store, export, runID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return res, stepRetry, err
	}
	done := prev != nil && prev.Status == StatusSucceeded
	if done {
		// A file whose run was undone is not sent again by the schedule or
		// a late duplicate event: it was undone for a reason. An undo that
		// was undone in turn (a redo) may be asked for again.
		switch undone, err := s.undone(ctx, export, runID); {
		case err != nil:
			return res, stepRetry, err
		case undone && q.Undo != "":
			done = false
		case undone:
			return d.done(ctx, prev, "this file was exported, then its run was undone ("+undoRunID(export, runID)+
				"): it is not sent again by itself; drop a corrected file, or send this one again with a full resync "+
				"(`segpilot run --full` locally, {\"fullResync\": true} in AWS)")
		}
	}
	if latest := st.Latest; latest != nil && q.Arrived.Before(latest.Arrived) && !q.sameFile(latest) {
		if done {
			return d.upToDate(ctx, prev, "; but a newer file, "+latest.Source.Key+", has been exported since, so the list holds "+
				"that file's contacts (to export this one's again, put it under a new name)")
		}
		return d.decide(ctx, StatusSuperseded, fmt.Sprintf("skipped: %s arrived before %s, which was already exported; "+
			"exporting the older file now would undo newer data", q.Source.Key, latest.Source.Key), nil)
	}
	if done && q.Undo != "" {
		return d.done(ctx, prev, "run "+q.Undo+" was undone already, by this run: nothing to do")
	}
	if done {
		return d.upToDate(ctx, prev, "")
	}
	if prev != nil && prev.Status == StatusInvalid && prev.InvalidFile {
		// The same bytes under the same config are invalid again: said
		// once (one report, one metric, one alarm), not at every
		// duplicate event or refresh. (A destination that did not match
		// may have been fixed since: that is tried again.)
		return d.again(ctx, prev)
	}
	if err := cfg.Runnable(e); err != nil {
		return d.decide(ctx, StatusRefused, err.Error(), nil)
	}

	var m *Manifest
	if q.Undo != "" {
		m, err = s.undoPlanFor(ctx, cfg, e, q, runID, st.Snapshot)
	} else {
		m, err = s.planFor(ctx, cfg, e, q.request(export), runID, st.Snapshot)
	}
	var refusedUndo *UndoRefused
	var limit *plan.LimitError
	var ferr *segment.FileError
	var changed *DeliveryChanged
	switch {
	case errors.As(err, &refusedUndo):
		return d.decide(ctx, StatusRefused, err.Error(), nil)
	case errors.As(err, &changed):
		return d.decide(ctx, StatusSuperseded, "skipped: "+changed.Msg, nil)
	case errors.As(err, &limit):
		// No plan, but the file was read: the report shows what it holds.
		res.Counts = limit.Counts
		d.fileInvalid = true
		return d.decide(ctx, StatusInvalid, err.Error(), m)
	case errors.As(err, &ferr):
		d.fileInvalid = true
		return d.decide(ctx, StatusInvalid, err.Error(), m)
	case err != nil:
		return res, stepRetry, d.notYet(ctx, "planning failed", err, m)
	}
	res.Counts = m.Counts
	if m.Held && !q.AllowLargeRemoval && !e.AllowLargeRemoval {
		return d.decide(ctx, StatusHeld, m.HeldReason+"; if that is intended, "+s.words().LiftBrake(e.Name)+
			" (or set allowLargeRemoval: true under exports."+e.Name+" to lift it for good)", m)
	}

	// The list is resolved once, before the fan-out: it proves the key
	// works (and that the destination has the export's custom fields)
	// before an attempt claims the export.
	li, err := s.resolveList(ctx, m)
	var unauth *Unauthorized
	var mismatch *dest.ConfigError
	switch {
	case errors.As(err, &mismatch):
		return d.decide(ctx, StatusInvalid, m.Connection.Title()+" does not match the export: "+err.Error()+"; nothing was sent", m, li.requests)
	case errors.As(err, &unauth):
		d.detail = unauth.Msg
		return d.decide(ctx, StatusFailed, s.refusedMessage(unauth), m, li.requests)
	case err != nil:
		return res, stepRetry, d.notYet(ctx, "finding the list failed", err, m, li.requests)
	}
	if li.gone && m.Undo != nil {
		return d.decide(ctx, StatusFailed, "the list "+m.List+" that run "+m.Undo.Of+" changed is gone (deleted, or the key opens another account): "+
			"there is nothing to undo; nothing was sent", m, li.requests)
	}
	if li.gone && st.Snapshot != nil {
		// The list the snapshot describes is gone: nobody is on the one
		// made in its place, so every contact of the file is sent, as in a
		// first run (against no snapshot; the attempt's snapshot then says
		// who is on the new list).
		if m, err = s.planFor(ctx, cfg, e, q.request(export), runID, nil); err != nil {
			return res, stepRetry, d.notYet(ctx, "planning failed", err, nil)
		}
		li.notes = append(li.notes, "Every contact of the file was sent again, since the list it was on is gone.")
		res.Counts = m.Counts
	}
	return s.claim(ctx, export, st, etag, q, m, li.id, attemptRecord{ListRequests: li.requests, LookupRequests: li.lookup, Notes: li.notes}, &res)
}

// groupSizeOf is the Map's ItemBatcher size for m's items: one group an
// item, or GroupSize batches for a plan from before MapItems.
func groupSizeOf(m *Manifest) int {
	if m.ItemGroups {
		return 1
	}
	return GroupSize(m.Batches, m.Concurrency, m.WorkerRPS)
}

// claim makes the next epoch attempt n of the run, holding the export,
// then starts its execution.
func (s *Service) claim(ctx context.Context, export string, st exportState, etag string, q *queueEntry, m *Manifest, listID string, before attemptRecord, res *Result) (Result, step, error) {
	n := st.Epoch + 1
	input, err := json.Marshal(Execution{Export: export, RunID: m.RunID, Attempt: n, Plan: m.Base,
		ItemsKey: itemsKey(export, m.RunID, m.Base), MapResultsPrefix: mapResultsPrefix(export, m.RunID, n), ListID: listID,
		Concurrency: m.Concurrency, WorkerRPS: m.WorkerRPS, GroupSize: groupSizeOf(m),
		StartedAt: s.now()})
	if err != nil {
		return *res, stepRetry, err
	}
	h := &Holder{Export: export, Run: m.RunID, Attempt: n, Execution: executionName(m.RunID, n), Plan: m.Base, Owner: s.Owner, Input: input, Delivery: *q}
	won, err := s.swapState(ctx, export, exportState{Epoch: n, Holder: h, Snapshot: st.Snapshot, Latest: q}, etag)
	if err != nil || !won {
		return *res, stepRetry, err
	}
	log := s.Logger().With("export", export, "run", m.RunID, "attempt", n)
	log.Info("attempt claimed the export", "status", "claimed", "execution", h.Execution)
	res.Attempt = n
	// Started right after the claim: until its execution exists, only
	// liveness can tell a claimant about to start it from a dead one.
	started, err := s.Starter.StartRun(ctx, h.Execution, h.Input)
	if err != nil && !s.transient(err) {
		cerr := s.closeAttempt(ctx, export, h, ending{cause: "its execution could not start (" + briefCause("", err) + ")", detail: err.Error(), neverStarted: true, requeue: true})
		res.Status, res.Message = StatusFailed, "execution "+h.Execution+" could not start ("+err.Error()+"); the file stays queued"
		return *res, stepClaimed, errors.Join(err, cerr)
	}
	startErr := err
	res.Status, res.Started = StatusRunning, started
	if startErr != nil {
		// It may have started: the holder stays, and whoever drains next
		// asks whether it did (and starts it if not, under the same name).
		res.Message = "starting execution " + h.Execution + " got no clear answer (" + startErr.Error() +
			"); the next trigger finds out whether it started, and starts it if not"
	} else {
		log.Info("attempt started", "status", StatusRunning, "execution", h.Execution, "new", started)
	}
	if err := s.recordAttempt(ctx, h, before); err != nil {
		return *res, stepClaimed, errors.Join(startErr, err)
	}
	if err := s.settle(ctx, export, m.RunID, q, Delivery{Status: StatusRunning, Attempt: n}); err != nil {
		return *res, stepClaimed, errors.Join(startErr, err)
	}
	if err := s.join(ctx, export, q, h); err != nil {
		return *res, stepClaimed, errors.Join(startErr, err)
	}
	return *res, stepClaimed, startErr
}

// join settles the deliveries of the same file queued right after q (a
// file run again before its first run started, say): the attempt serves
// them too. Only up to the first delivery of another file, so arrival
// order holds.
func (s *Service) join(ctx context.Context, export string, q *queueEntry, h *Holder) error {
	objs, err := s.Store.List(ctx, queuePrefix(export))
	if err != nil {
		return fmt.Errorf("listing the queue of export %s: %w", export, err)
	}
	for _, o := range objs {
		if o.Key <= q.Key {
			continue
		}
		var next queueEntry
		switch err := getJSON(ctx, s.Store, o.Key, &next); {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return err
		}
		next.Key = o.Key
		if !next.sameFile(q) || next.AllowLargeRemoval && !q.AllowLargeRemoval || next.FullResync != q.FullResync {
			return nil
		}
		msg := fmt.Sprintf("served by attempt %d, started for an earlier delivery of the same file", h.Attempt)
		if err := s.settle(ctx, export, h.Run, &next, Delivery{Status: StatusRunning, Attempt: h.Attempt, Message: msg}); err != nil {
			return err
		}
	}
	return nil
}

// recordAttempt writes the attempt's record (create-only: a drainer
// closing an attempt whose claimant died writes one too, without what
// only the claimant knew: before, the list's requests and notes).
func (s *Service) recordAttempt(ctx context.Context, h *Holder, before attemptRecord) error {
	prior, err := s.Store.List(ctx, runPrefix(h.Export, h.Run)+"attempts/")
	if err != nil {
		return err
	}
	n := 0
	for _, o := range prior {
		if strings.HasSuffix(o.Key, "/attempt.json") && o.Key != attemptKey(h.Export, h.Run, h.Attempt) {
			n++
		}
	}
	rec := before
	rec.Holder, rec.Prior, rec.ClaimedAt = *h, n, s.now()
	err = putJSON(ctx, s.Store, attemptKey(h.Export, h.Run, h.Attempt), rec, store.PutOptions{IfNoneMatch: true})
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	return err
}

// settleHolder judges the attempt holding the export by its liveness:
// it reports true once the attempt is closed (the caller reads the state
// again), false while it runs, might run, or cannot be told.
func (s *Service) settleHolder(ctx context.Context, export string, st exportState, etag string) (bool, error) {
	h := st.Holder
	log := s.Logger().With("export", export, "run", h.Run, "attempt", h.Attempt)
	live, err := s.Liveness.Attempt(ctx, *h)
	if err != nil {
		// Not knowing is never a reason to run two at once.
		log.Warn("cannot tell whether the attempt holding the export runs; waiting for it", "error", err)
		return false, nil
	}
	switch live.State {
	case LiveNotStarted:
		// Its start was lost, or its claimant is about to start it: start
		// it under its own name, with its own input; Step Functions starts
		// one execution whoever asks.
		_, err := s.Starter.StartRun(ctx, h.Execution, h.Input)
		switch {
		case err == nil:
			log.Warn("started an attempt whose own start was not seen", "status", StatusRunning, "execution", h.Execution)
			return false, nil
		case s.transient(err):
			log.Warn("starting an attempt whose own start was not seen", "execution", h.Execution, "error", err)
			return false, nil
		}
		return true, s.closeAttempt(ctx, export, h, ending{cause: "its execution could not start (" + briefCause("", err) + ")", detail: err.Error(), neverStarted: true, requeue: true, state: &st, etag: etag})
	case LiveEnded:
		if wait := s.EndedGrace - s.now().Sub(live.EndedAt); wait > 0 {
			log.Info("the attempt holding the export ended; leaving its invocations in flight time to finish", "wait", wait.Round(1e9).String())
			return false, nil
		}
		return true, s.closeAttempt(ctx, export, h, ending{cause: s.words().EndedEarly(*h), state: &st, etag: etag})
	}
	return false, nil
}

// stuck reports an export whose state cannot be read, with a report for
// the delivery that waits on it, so that one broken export raises its own
// alarm without stopping the others.
func (s *Service) stuck(ctx context.Context, cfg *config.Config, export string, want *wanted, cause error) error {
	var broken *BrokenState
	if want == nil || !errors.As(cause, &broken) {
		return cause
	}
	var q queueEntry
	if err := getJSON(ctx, s.Store, want.key, &q); err != nil {
		return errors.Join(cause, err)
	}
	rep := &Report{Export: export, RunID: want.runID, Trigger: q.Trigger, Source: q.Source, ConfigVersion: cfg.Version,
		Status: StatusFailed, Message: cause.Error() + "; this file stays queued", FinishedAt: s.now(), Seq: -1}
	if e, err := cfg.Export(export); err == nil {
		rep.Mode, rep.List = e.Mode, e.List
	}
	return errors.Join(cause, s.publish(ctx, rep))
}

// exportsOf returns the config's exports sorted by name.
func exportsOf(cfg *config.Config) []*config.Export {
	var out []*config.Export
	for _, name := range slices.Sorted(maps.Keys(cfg.Exports)) {
		out = append(out, cfg.Exports[name])
	}
	return out
}
