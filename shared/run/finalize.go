package run

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// FinalizeInput is the finalize step's event: the execution input, plus
// mapError when the Map failed as a whole (e.g. the key was refused).
type FinalizeInput struct {
	Export    string    `json:"export"`
	RunID     string    `json:"runId"`
	Attempt   int64     `json:"attempt"`
	Plan      string    `json:"plan"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	MapError  *MapError `json:"mapError,omitempty"`
}

// MapError is Step Functions' error object.
type MapError struct {
	Error string `json:"Error"`
	Cause string `json:"Cause"`
}

// Finalize ends an attempt: its report (from its batches' results, never
// from the Map's error), the snapshot it leaves, the export set free, and
// a kick for whatever waits in the export's queue. It starts nothing.
func (s *Service) Finalize(ctx context.Context, in FinalizeInput) (*Report, error) {
	if in.Export == "" || in.RunID == "" || in.Attempt <= 0 {
		return nil, fmt.Errorf("finalize event: want export, runId and attempt, got %+v", in)
	}
	h := &Holder{Export: in.Export, Run: in.RunID, Attempt: in.Attempt, Plan: in.Plan, Execution: executionName(in.RunID, in.Attempt)}
	end := ending{cause: "the batch did not complete", startedAt: in.StartedAt}
	if in.MapError != nil {
		end.cause = "the run's Map failed with " + clip(in.MapError.Error, 100)
		end.detail = in.MapError.Error + ": " + in.MapError.Cause
	}
	var rep *Report
	var err error
	if in.MapError != nil {
		// The Map failed as a whole (the key refused, say): its other
		// children may still be sending, so the export stays held until
		// the execution and its invocations are over, and the drain that
		// then finds it ended writes the attempt's report, from every
		// batch's record, with this cause. Until then the run's report
		// says what is known.
		rep, err = s.stopping(ctx, h, end)
	} else if rep, err = s.endAttempt(ctx, h, end); err == nil {
		err = s.apply(ctx, h, rep, ending{})
	}
	if err != nil {
		return nil, s.classify(fmt.Errorf("finalizing %s attempt %d: %w", in.RunID, in.Attempt, err))
	}
	if s.Kicker != nil {
		if err := s.Kicker.Kick(ctx, in.Export); err != nil {
			// The schedule, or the next file, drains the queue all the same.
			s.Logger().Error("kicking the export's queue", "export", in.Export, "run", in.RunID, "error", err)
		}
	}
	return rep, nil
}

// stopped is runs/<export>/<run>/attempts/<n>/stopped.json: the attempt's
// Map failed, with this cause; whoever closes the attempt reports it.
type stopped struct {
	Cause  string `json:"cause"`
	Detail string `json:"detail"`
}

// stopping records why attempt h's Map failed and publishes what its
// batches recorded so far, as a closing report; the attempt's own report
// is written when it is closed. A late or repeated finalize of an attempt
// already closed changes nothing.
func (s *Service) stopping(ctx context.Context, h *Holder, end ending) (*Report, error) {
	ctx = context.WithoutCancel(ctx)
	var final Report
	switch err := getJSON(ctx, s.Store, attemptReportKey(h.Export, h.Run, h.Attempt), &final); {
	case err == nil:
		return &final, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if err := putJSON(ctx, s.Store, stoppedKey(h.Export, h.Run, h.Attempt), stopped{Cause: end.cause, Detail: end.detail}, store.PutOptions{}); err != nil {
		return nil, err
	}
	rep, err := s.conclude(ctx, h, end)
	if err != nil {
		return nil, err
	}
	rep.Closing = true
	rep.Message = strings.TrimSpace(rep.Message + " (The batches still in flight end first; this report is final then.)")
	return rep, s.publish(ctx, rep)
}

// maxRefills bounds the attempts a run makes again because its list was
// deleted while it sent: past it, the next run refills the list instead.
const maxRefills = 3

// noteRelisting fails an attempt whose list was deleted (and made again)
// while it sent: what it sent before is not on the new list, so it leaves
// no snapshot (the next attempt sends every contact, as to a new list),
// and its file is queued again.
func (s *Service) noteRelisting(ctx context.Context, m *Manifest, h *Holder, rep *Report) error {
	var r relisting
	switch err := getJSON(ctx, s.Store, relistedKey(m.Export, m.RunID, h.Attempt), &r); {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	rep.Refill, rep.Requeued = true, rep.Prior+1 < maxRefills
	what := fmt.Sprintf("list %q was deleted while this attempt sent (batch %d found it gone) and was made again: contacts sent before then are not on it, so ",
		m.List, r.Batch)
	if rep.Requeued {
		what += "the file is queued again to send every contact"
	} else {
		what += fmt.Sprintf("after %d attempts the next run sends every contact", rep.Prior+1)
	}
	if rep.Status == StatusFailed {
		what += "; besides, " + rep.Message
	}
	rep.Status, rep.Message = StatusFailed, what
	return nil
}

// ending says how an attempt ends when it is closed.
type ending struct {
	cause        string    // why batches not settled were not delivered, for a person
	detail       string    // the technical cause behind it, when there is one
	startedAt    time.Time // when the attempt began; zero: from its holder's input
	neverStarted bool      // its execution never started: nothing was sent
	requeue      bool      // its delivery goes back to the queue (it never ran)
	state        *exportState
	etag         string
}

// closeAttempt ends attempt h, found over by a drainer: the same report
// its finalize would have written (unless that finalize, or another
// drainer, wrote one first), then the swap that frees the export.
func (s *Service) closeAttempt(ctx context.Context, export string, h *Holder, end ending) error {
	log := s.Logger().With("export", export, "run", h.Run, "attempt", h.Attempt)
	// Whoever closes it records it too, in case its claimant died first.
	if err := s.recordAttempt(ctx, h, attemptRecord{}); err != nil {
		return err
	}
	var st stopped
	switch err := getJSON(ctx, s.Store, stoppedKey(h.Export, h.Run, h.Attempt), &st); {
	case err == nil: // its finalize said why it stopped
		end.cause, end.detail = st.Cause, st.Detail
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	rep, err := s.endAttempt(ctx, h, end)
	if err != nil {
		return err
	}
	log.Warn("closed an attempt that ended without its finalize", "status", rep.Status, "message", rep.Message)
	return s.apply(ctx, h, rep, end)
}

// endAttempt returns attempt h's report, writing it first if there is
// none: create-only, so the attempt has exactly one, whoever wrote it.
func (s *Service) endAttempt(ctx context.Context, h *Holder, end ending) (*Report, error) {
	ctx = context.WithoutCancel(ctx) // an attempt being closed is closed, Ctrl-C or not
	key := attemptReportKey(h.Export, h.Run, h.Attempt)
	var rep Report
	switch err := getJSON(ctx, s.Store, key, &rep); {
	case err == nil:
		return &rep, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	mine, err := s.conclude(ctx, h, end)
	if err != nil {
		return nil, err
	}
	switch err := putJSON(ctx, s.Store, key, mine, store.PutOptions{IfNoneMatch: true}); {
	case errors.Is(err, store.ErrExists):
		if err := getJSON(ctx, s.Store, key, &rep); err != nil {
			return nil, err
		}
		return &rep, nil
	case err != nil:
		return nil, err
	}
	s.emit(mine)
	s.Logger().Info("attempt "+mine.Status, "export", h.Export, "run", h.Run, "attempt", h.Attempt, "status", mine.Status,
		"sent", mine.Outcome.Sent, "rejected", mine.Outcome.Rejected+mine.Outcome.RejectedByAPI,
		"failed", mine.Outcome.Failed, "removed", mine.Outcome.Removed)
	return mine, nil
}

// apply publishes h's report as the run's latest outcome, then frees the
// export from h and moves its snapshot as the report says, by one swap,
// unless someone did already. Publishing first, so a closer that dies
// between the two leaves the holder in place: the next drain closes the
// attempt again, finds its report, and does both.
func (s *Service) apply(ctx context.Context, h *Holder, rep *Report, end ending) error {
	ctx = context.WithoutCancel(ctx)
	var st exportState
	var etag string
	if end.state != nil {
		st, etag = *end.state, end.etag
	} else {
		var err error
		if st, etag, err = s.readState(ctx, h.Export); err != nil {
			return err
		}
	}
	if !st.Holder.is(h.Run, h.Attempt) {
		return nil // applied by whoever closed it first
	}
	if err := s.publish(ctx, rep); err != nil {
		return err
	}
	for st.Holder.is(h.Run, h.Attempt) {
		if end.requeue || rep.Requeued {
			// Before the swap, so the file cannot be forgotten: the entry's
			// key is its own, and whoever drains next runs it.
			if _, err := s.enqueue(ctx, h.Export, st.Holder.Delivery.request(h.Export)); err != nil {
				return err
			}
		}
		next := st
		next.Holder = nil
		switch {
		case rep.Refill:
			// Nobody knows who is on the list made again mid-run.
			next.Snapshot = nil
		case rep.SnapshotPromoted:
			next.Snapshot = &SnapshotRef{Key: rep.Snapshot, Run: h.Run, Attempt: h.Attempt}
		}
		won, err := s.swapState(ctx, h.Export, next, etag)
		if err != nil || won {
			return err
		}
		if st, etag, err = s.readState(ctx, h.Export); err != nil {
			return err
		}
	}
	return nil
}

// conclude builds attempt h's report from what its batches recorded: a
// batch with a result is settled; one without, failed (its failure record,
// or every contact in it), its removals done so far excepted. The
// snapshot it leaves is the plan's target for every contact delivered and
// the previous state for every other, so the next run sends exactly what
// was not delivered.
func (s *Service) conclude(ctx context.Context, h *Holder, end ending) (*Report, error) {
	m, err := s.readManifest(ctx, h.Export, h.Run, h.Plan)
	if err != nil {
		return nil, fmt.Errorf("reading the plan of %s attempt %d: %w", h.Run, h.Attempt, err)
	}
	var rec attemptRecord
	if err := getJSON(ctx, s.Store, attemptKey(h.Export, h.Run, h.Attempt), &rec); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	started := end.startedAt
	if started.IsZero() {
		var in Execution
		if len(h.Input) > 0 && json.Unmarshal(h.Input, &in) == nil {
			started = in.StartedAt
		}
	}
	rep := &Report{Export: m.Export, RunID: m.RunID, Attempt: h.Attempt, Prior: rec.Prior, Trigger: m.Trigger, Source: m.Source,
		Destination: m.Connection.Title(), ConfigVersion: m.ConfigVersion, Mode: m.Mode, FullResync: m.FullResync, Undo: m.Undo, Split: m.Split, List: m.List, Plan: m.Counts,
		Base: m.BaseKey, PlannedAt: m.PlannedAt, Seq: attemptSeq(h.Attempt),
		Rejected: rejectedKey(m.Export, m.RunID, h.Attempt)}
	rep.Requests.add(rec.ListRequests)
	rep.Requests.Lookup = rec.LookupRequests
	rep.Notes = rec.Notes
	rep.StartedAt = cmp.Or(started, m.PlannedAt)
	finish := func() {
		rep.FinishedAt = s.now()
		rep.DurationSeconds = rep.FinishedAt.Sub(rep.StartedAt).Seconds()
	}
	if end.neverStarted {
		rep.Status, rep.Message, rep.Error = StatusFailed, "attempt "+strconv.FormatInt(h.Attempt, 10)+" never ran: "+end.cause+"; nothing was sent", end.detail
		if end.requeue {
			rep.Message += ", and the file is queued again"
			rep.Requeued = true
		}
		finish()
		return rep, s.accountUnsent(ctx, rep, m, "not sent: the attempt never ran")
	}

	// Why batches that did not settle were not delivered, in rejected.csv:
	// when the key was refused, that (the Map's cause on AWS need not say
	// it); else the cause, clipped (the whole of it is the report's error).
	var refused refusal
	switch err := getJSON(ctx, s.Store, refusalKey(m.Export, m.RunID, h.Attempt), &refused); {
	case err == nil:
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	rowCause := end.cause
	if refused.Message != "" {
		rowCause = m.Connection.Title() + " refused the API key (see the report)"
	}

	rep.Outcome = Outcome{Rows: m.Counts.Rows, Unchanged: m.Counts.Unchanged - m.Counts.Resent, Duplicates: m.Counts.Duplicates, Rejected: m.Counts.Rejected,
		OtherGroups: m.Counts.OtherGroups}
	rep.Batches.Total = len(m.Batches)
	var (
		issues  []RowIssue // destination rejections and failures, for rejected.csv
		tl      timeline   // the batches' timings, for the run's page
		kept    []string   // contacts the destination refused: not applied
		unknown []string   // contacts and leavers whose outcome was not seen
		failed  []int      // batches not settled
	)
	for _, ref := range m.Batches {
		var res BatchResult
		err := getJSON(ctx, s.Store, resultKey(m.Export, m.RunID, h.Attempt, ref.Seq), &res)
		switch {
		case err == nil:
			rep.Batches.Settled++
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		default:
			failed = append(failed, ref.Seq)
			if res, err = s.unsettled(ctx, m, h.Attempt, ref, rowCause); err != nil {
				return nil, err
			}
		}
		tl.add(res)
		rep.Outcome.Sent += res.Sent
		rep.Outcome.Removed += res.Removed
		rep.Outcome.RejectedByAPI += len(res.Rejected)
		rep.Requests.add(res.Requests)
		for _, r := range res.Rejected {
			kept = append(kept, r.Email)
			issues = append(issues, RowIssue{Row: r.Row, Email: r.Email, Reason: "rejected by " + m.Connection.Title() + ": " + r.Reason})
		}
		// A contact the mode left alone keeps its previous state too, so
		// the next run looks at it again (it may have been made since).
		rep.Outcome.Skipped += len(res.ModeSkipped)
		for _, r := range res.ModeSkipped {
			kept = append(kept, r.Email)
			issues = append(issues, r)
		}
		for _, f := range res.Failed {
			if f.Row == 0 { // a removal
				rep.Outcome.RemoveFailed++
			} else {
				rep.Outcome.Failed++
			}
			unknown = append(unknown, f.Email)
			issues = append(issues, RowIssue{Row: f.Row, Email: f.Email, Reason: "failed: " + f.Reason})
		}
	}
	rep.Batches.Failed = len(failed)
	if err := s.writeRejected(ctx, m, rep.Rejected, issues); err != nil {
		return nil, err
	}
	// A contact the destination refused keeps its previous state (a new
	// one stays absent, so the next run tries it again); one whose outcome
	// was not seen (failed, or in a batch that never settled: its request
	// may have been applied) is unknown, so the next run sends it again
	// whatever its next file says.
	slices.Sort(kept)
	slices.Sort(unknown)
	if rep.Snapshot, err = s.promote(ctx, m, h.Attempt, kept, unknown); err != nil {
		return nil, err
	}
	rep.SnapshotPromoted = true

	rep.Status = StatusSucceeded
	if len(failed) > 0 {
		// Why the Map stopped, when the key was refused: every batch
		// settling says the key works after all.
		rep.Status, rep.Error = StatusFailed, end.detail
		if refused.Message != "" {
			rep.Message = refused.Message
		} else {
			rep.Message = fmt.Sprintf("%d of %d batches were not delivered (%s): batch %s; their contacts are in rejected.csv, "+
				"and the next run sends exactly those again, with whatever changed since", len(failed), len(m.Batches), end.cause, seqList(failed))
		}
	}
	if err := s.noteRelisting(ctx, m, h, rep); err != nil {
		return nil, err
	}
	rep.FloorSeconds = floorSeconds(m)
	if rep.RateFound = rateFound(&tl, rep.Requests.Throttled, m.Connection.RequestsPerSecond); rep.RateFound > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s accepted up to %.1f requests/s (its best 10 s) while it answered 429s; the budget says %s: "+
			"set the connection's requestsPerSecond to about %s to spare the 429s and their waits",
			m.Connection.Title(), rep.RateFound, strconv.FormatFloat(m.Connection.RequestsPerSecond, 'f', -1, 64), strconv.Itoa(int(rep.RateFound))))
	}
	finish()
	return rep, s.pageDetails(ctx, m, rep, issues, &tl)
}

// seqList names batches for a person: "7", "7, 9 and 12", "7, 9, 12 and 40 more".
func seqList(seqs []int) string {
	const shown = 3
	if len(seqs) == 0 {
		return "none"
	}
	var parts []string
	for _, n := range seqs[:min(len(seqs), shown)] {
		parts = append(parts, strconv.Itoa(n))
	}
	switch {
	case len(seqs) > shown:
		return fmt.Sprintf("%s and %d more", joinComma(parts), len(seqs)-shown)
	case len(parts) > 1:
		return joinComma(parts[:len(parts)-1]) + " and " + parts[len(parts)-1]
	}
	return parts[0]
}

func joinComma(parts []string) string {
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += ", "
		}
		out += p
	}
	return out
}

// unsettled accounts for a batch that never settled in attempt n: what its
// last try recorded (its failure record), or else every contact in it as
// failed, but for the removals its checkpoint says were done.
func (s *Service) unsettled(ctx context.Context, m *Manifest, n int64, ref plan.BatchRef, cause string) (BatchResult, error) {
	var last BatchResult
	switch err := getJSON(ctx, s.Store, failureKey(m.Export, m.RunID, n, ref.Seq), &last); {
	case err == nil:
		return last, nil
	case !errors.Is(err, store.ErrNotFound):
		return last, err
	}
	var prog batchProgress
	if err := getJSON(ctx, s.Store, progressKey(m.Export, m.RunID, n, ref.Seq), &prog); err != nil && !errors.Is(err, store.ErrNotFound) {
		return last, err
	}
	b, err := s.readPlannedBatch(ctx, m, ref)
	if err != nil {
		return last, err
	}
	done := make(map[string]bool, len(prog.Removed))
	for _, e := range prog.Removed {
		done[e] = true
	}
	res := BatchResult{Batch: ref.Seq, Removed: len(prog.Removed), Requests: prog.Requests}
	for _, u := range b.Upserts {
		res.Failed = append(res.Failed, RowIssue{Row: u.Row, Email: u.Profile.Email, Reason: cause})
	}
	for _, e := range b.Removals {
		if !done[e] {
			res.Failed = append(res.Failed, RowIssue{Email: e, Reason: "not removed from the list: " + cause})
		}
	}
	return res, nil
}

// promote writes the snapshot attempt n leaves and returns its key: the
// plan's target, but for the contacts kept (the base's state) and unknown
// (plan.UnknownHash), both sorted. With neither that is the plan's own
// snapshot, so nothing is written.
func (s *Service) promote(ctx context.Context, m *Manifest, n int64, kept, unknown []string) (string, error) {
	planned := plannedSnapshotKey(m.Export, m.RunID, m.Base)
	if len(kept) == 0 && len(unknown) == 0 {
		return planned, nil
	}
	target, _, err := s.Store.Get(ctx, planned)
	if err != nil {
		return "", fmt.Errorf("promoting the snapshot: %w", err)
	}
	defer target.Close()
	var base io.Reader
	if m.BaseKey != "" {
		rc, _, err := s.Store.Get(ctx, m.BaseKey)
		if err != nil {
			return "", fmt.Errorf("promoting the snapshot: reading its base: %w", err)
		}
		defer rc.Close()
		base = rc
	}
	// A key of its own: two closers racing may see different batches
	// settled, and the report that wins must name the snapshot it built.
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	key := promotedKey(m.Export, m.RunID, n) + "-" + hex.EncodeToString(id[:])
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(plan.PromoteByRow(base, target, kept, unknown, pw)) }()
	_, err = s.Store.Put(ctx, key, pr, store.PutOptions{ContentType: "text/plain"})
	pr.CloseWithError(err)
	if err != nil {
		return "", fmt.Errorf("promoting the snapshot: %w", err)
	}
	return key, nil
}

// readPlannedBatch reads one batch of the plan by its index entry (its
// line of batches.jsonl). Like every reader of a batch not about to be
// sent, it does not check the checksum.
func (s *Service) readPlannedBatch(ctx context.Context, m *Manifest, ref plan.BatchRef) (*plan.Batch, error) {
	if ref.Length <= 0 || ref.Length > maxBatchBytes {
		return nil, fmt.Errorf("batch %d: a range of %d bytes is not one segpilot's planner wrote", ref.Seq, ref.Length)
	}
	key := batchesKey(m.Export, m.RunID, m.Base)
	rc, err := s.Store.GetRange(ctx, key, ref.Offset, ref.Length)
	if err != nil {
		return nil, fmt.Errorf("batch %d: %w", ref.Seq, err)
	}
	defer rc.Close()
	raw := make([]byte, ref.Length)
	if _, err := io.ReadFull(rc, raw); err != nil {
		return nil, fmt.Errorf("batch %d: reading %s: %w", ref.Seq, key, err)
	}
	b, err := plan.ReadBatch(raw)
	if err != nil {
		return nil, fmt.Errorf("batch %d: %w", ref.Seq, err)
	}
	return b, nil
}

// writeRejected writes rejected.csv at key: the file's invalid rows and
// dropped duplicates, then the contacts the destination refused or that
// were not delivered.
func (s *Service) writeRejected(ctx context.Context, m *Manifest, key string, issues []RowIssue) error {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(func() error {
			rc, _, err := s.Store.Get(ctx, inputRejectedKey(m.Export, m.RunID, m.Base))
			if err != nil {
				return err
			}
			_, err = io.Copy(pw, rc)
			rc.Close()
			if err != nil {
				return err
			}
			w := csv.NewWriter(pw)
			for _, is := range issues {
				row := ""
				if is.Row > 0 {
					row = strconv.Itoa(is.Row)
				}
				if err := w.Write([]string{row, segment.SafeCSVCell(is.Email), segment.SafeCSVCell(is.Reason)}); err != nil {
					return err
				}
			}
			w.Flush()
			return w.Error()
		}())
	}()
	_, err := s.Store.Put(ctx, key, pr, store.PutOptions{ContentType: "text/csv"})
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("writing rejected.csv: %w", err)
	}
	return nil
}

// rateFound is the highest rate the destination accepted requests at over
// any sustainedFor of the run (the whole run, when shorter), when it also
// answered 429s and that rate is under 90 % of the budget; 0 otherwise,
// or when the run was too short to tell (under 5 s, or under 20 requests
// accepted). Not the rate over the whole run: a run's slow start after
// its first 429s and the last requests of a worker paused near its end
// read the destination's rate 5-12 % low at a budget three times too
// high. An API takes at most its burst over its rate in any span, a few
// in a hundred over sustainedFor.
func rateFound(tl *timeline, throttled int, budget float64) float64 {
	if throttled == 0 || budget <= 0 || len(tl.spans) == 0 {
		return 0
	}
	type answered struct {
		at       time.Time
		accepted int
	}
	ends := make([]answered, 0, len(tl.spans))
	from, to := tl.spans[0].StartedAt, time.Time{}
	accepted := 0
	for _, b := range tl.spans {
		if b.StartedAt.Before(from) {
			from = b.StartedAt
		}
		end := b.StartedAt.Add(time.Duration(b.DurationMS) * time.Millisecond)
		if end.After(to) {
			to = end
		}
		ok := b.Requests.Total - b.Requests.Throttled
		ends = append(ends, answered{end, ok})
		accepted += ok
	}
	secs := to.Sub(from).Seconds()
	if secs < 5 || accepted < 20 {
		return 0
	}
	r := float64(accepted) / secs
	if secs > sustainedFor.Seconds() {
		slices.SortFunc(ends, func(a, b answered) int { return a.at.Compare(b.at) })
		in, first := 0, 0
		for _, e := range ends {
			in += e.accepted
			for !ends[first].at.After(e.at.Add(-sustainedFor)) {
				in -= ends[first].accepted
				first++
			}
			r = max(r, float64(in)/sustainedFor.Seconds())
		}
	}
	if r < 0.9*budget {
		return math.Round(r*10) / 10
	}
	return 0
}

// sustainedFor is the span over which rateFound takes the destination's
// rate.
const sustainedFor = 10 * time.Second

// floorSeconds is the least time the run's requests need at the connection's budget.
func floorSeconds(m *Manifest) float64 {
	if m.Connection.RequestsPerSecond <= 0 {
		return 0
	}
	requests := 0
	perRemoval := max(1, m.Connection.Capabilities().RemoveBatch) // Autopilot: one request a removal; Ortto: 100
	for _, b := range m.Batches {
		if b.Upserts > 0 {
			requests++
		}
		requests += (b.Removals + perRemoval - 1) / perRemoval
	}
	return float64(requests) / m.Connection.RequestsPerSecond
}

// EmitMetrics writes the run's outcome and figures as one CloudWatch
// Embedded Metric Format line (namespace segpilot), so metrics cost no API
// calls. The outcome is one of RunsSucceeded, RunsFailed, RunsHeld,
// RunsInvalid and RunsRefused at 1, the others at 0. Every metric is
// published twice: by Export, and without a dimension for the
// deployment-wide alarms (CloudWatch keeps one metric per dimension set,
// and an alarm watches exactly one).
func EmitMetrics(w io.Writer, rep *Report) error {
	outcome := func(status string) float64 {
		if rep.Status == status {
			return 1
		}
		return 0
	}
	metrics := []struct {
		name  string
		unit  string
		value float64
	}{
		{"RunsSucceeded", "Count", outcome(StatusSucceeded)},
		{"RunsFailed", "Count", outcome(StatusFailed)},
		{"RunsHeld", "Count", outcome(StatusHeld)},
		{"RunsInvalid", "Count", outcome(StatusInvalid)},
		{"RunsRefused", "Count", outcome(StatusRefused)},
		{"ContactsSent", "Count", float64(rep.Outcome.Sent)},
		{"ContactsRejected", "Count", float64(rep.Outcome.Rejected + rep.Outcome.RejectedByAPI)},
		{"ContactsFailed", "Count", float64(rep.Outcome.Failed)},
		{"ContactsRemoved", "Count", float64(rep.Outcome.Removed)},
		{"Throttled", "Count", float64(rep.Requests.Throttled)},
		{"Requests", "Count", float64(rep.Requests.Total)},
		{"RunDuration", "Seconds", rep.DurationSeconds},
		{"Retries", "Count", float64(rep.Requests.Retries)},
		{"RunFloor", "Seconds", rep.FloorSeconds}, // the dashboard draws RunDuration against it
	}
	defs := make([]map[string]string, len(metrics))
	doc := map[string]any{"Export": rep.Export, "Status": rep.Status, "run": rep.RunID}
	for i, mt := range metrics {
		defs[i] = map[string]string{"Name": mt.name, "Unit": mt.unit}
		doc[mt.name] = mt.value
	}
	doc["_aws"] = map[string]any{
		"Timestamp": time.Now().UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace": MetricsNamespace, "Dimensions": [][]string{{"Export"}, {}}, "Metrics": defs,
		}},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// MetricsNamespace is the CloudWatch namespace of segpilot's metrics.
const MetricsNamespace = "segpilot"
