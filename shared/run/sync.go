package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/secrets"
	"github.com/segpilot/segpilot/shared/store"
)

// SyncBatch sends a group of consecutive batches of a run (the syncbatch
// step) in order, with one destination client, so one pacing for the
// group. It is safe to repeat: a batch whose result file exists is not
// sent again, and upserts by email are idempotent, so a retry resumes at
// the group's first batch not settled. It returns *Unauthorized,
// *Transient, *Throttled, *Corrupt or *Fenced for the state machine to act on, and
// a summary with no contact in it.
func (s *Service) SyncBatch(ctx context.Context, g Group) (*GroupSummary, error) {
	sum, at, err := s.syncGroup(ctx, g)
	err = s.classify(err)
	if !retried(err) {
		in := g.BatchInput
		s.throttleSignal(in.Export, in.RunID, in.Attempt).groupDone(context.WithoutCancel(ctx))
	}
	if err == nil {
		return sum, nil
	}
	var refused *Unauthorized
	if errors.As(err, &refused) {
		// The Map fails on this error, and its Cause on AWS need not say
		// why: finalize reads the reason from the run instead.
		if rerr := s.recordRefusal(context.WithoutCancel(ctx), g.BatchInput, at, refused); rerr != nil {
			s.Logger().Error("recording the refused key", "export", g.BatchInput.Export, "run", g.BatchInput.RunID, "batch", at, "error", rerr)
		}
	}
	return nil, err
}

// refusal is runs/<export>/<run>/attempts/<n>/refused.json: the key was
// refused (or is missing) in this attempt, and what the report should say.
type refusal struct {
	Message string    `json:"message"`
	Batch   int       `json:"batch"`
	At      time.Time `json:"at"`
}

// relisting is runs/<export>/<run>/attempts/<n>/relisted.json: the list
// was gone when batch Batch was sent, and was found or made again. What
// the attempt sent before is not on the new list.
type relisting struct {
	Batch int       `json:"batch"`
	At    time.Time `json:"at"`
}

func (s *Service) recordRefusal(ctx context.Context, in GroupInput, batch int, u *Unauthorized) error {
	return putJSON(ctx, s.Store, refusalKey(in.Export, in.RunID, in.Attempt), refusal{Message: s.refusedMessage(u), Batch: batch, At: s.now()}, store.PutOptions{})
}

// syncGroup sends the group's batches that are not settled yet, in order;
// it returns the summary so far and the batch it stopped at.
func (s *Service) syncGroup(ctx context.Context, g Group) (*GroupSummary, int, error) {
	began := time.Now() // monotonic: a relay's interval is counted from it (see Share)
	in := g.BatchInput
	items := BatchItems(g.Items)
	if len(items) == 0 || in.Export == "" || in.RunID == "" || in.Attempt <= 0 || in.Plan == "" {
		return nil, 0, errors.New("syncbatch event: want Items (the batches) and a BatchInput naming the export, run, attempt and plan")
	}
	sum := &GroupSummary{First: items[0].Batch, Last: items[len(items)-1].Batch}
	// Sending stops early enough before the invocation's deadline (Lambda's
	// timeout) to checkpoint and answer Transient: the state machine then
	// retries the group, which resumes where this attempt stopped, instead
	// of Lambda killing it mid-write.
	work, stop := beforeDeadline(ctx)
	defer stop()
	// Workers pacing shares of the budget in other containers pace as one
	// through the run's throttle signal.
	share := Share{RPS: in.WorkerRPS, Signal: s.throttleSignal(in.Export, in.RunID, in.Attempt), Relay: g.Items[0].Relay, Began: began,
		Workers: g.Items[0].Workers, Groups: g.Items[0].Groups}
	var (
		m          *Manifest
		d          Destination
		relisted   bool  // the list was found (or made) again once: it had gone
		incomplete []int // batches that left contacts undelivered, to retry
		why        string
	)
	batches := &groupBatches{s: s, in: in, items: items}
	for i, it := range items {
		var done BatchResult
		err := getJSON(ctx, s.Store, resultKey(in.Export, in.RunID, in.Attempt, it.Batch), &done)
		if err == nil {
			sum.Skipped++
			continue
		}
		if !errors.Is(err, store.ErrNotFound) {
			return sum, it.Batch, err
		}
		if err := ctx.Err(); err != nil {
			return sum, it.Batch, err
		}
		// Before each batch, not once a group: when a Map fails (the key
		// refused) its other children still run while finalize frees the
		// export, and the next attempt must not meet more than the batch
		// each had in flight.
		if err := s.checkFence(ctx, in); err != nil {
			return sum, it.Batch, err
		}
		if work.Err() != nil {
			s.Logger().Warn("group out of time", "export", in.Export, "run", in.RunID, "batch", it.Batch, "status", "retry")
			return sum, it.Batch, &Transient{Msg: fmt.Sprintf("batches %d-%d: stopped before the function's timeout at batch %d; "+
				"the retry resumes there", sum.First, sum.Last, it.Batch)}
		}
		if m == nil {
			if m, err = s.readManifestHead(ctx, in.Export, in.RunID, in.Plan); err != nil {
				return sum, it.Batch, fmt.Errorf("batch %d: %w", it.Batch, err)
			}
		}
		b, err := batches.batch(ctx, i)
		if err != nil {
			return sum, it.Batch, err
		}
		if d == nil {
			if d, err = s.Connect(work, m.Connection, share); err != nil {
				return sum, it.Batch, fmt.Errorf("batch %d: connecting: %w", it.Batch, err)
			}
		}
		res, err := s.sendBatch(ctx, work, m, in, b, d)
		if errors.Is(err, dest.ErrListGone) && !relisted {
			// Deleted by hand since ingest found it, or the key now opens
			// another account: find (or make) it again, through the
			// claims, and send the batch once more.
			relisted = true
			// Recorded first: once the list is made again nothing else
			// would tell finalize that contacts sent before are not on it.
			if rerr := putJSON(work, s.Store, relistedKey(in.Export, in.RunID, in.Attempt), relisting{Batch: it.Batch, At: s.now()}, store.PutOptions{}); rerr != nil {
				return sum, it.Batch, fmt.Errorf("batch %d: the list was gone: recording it: %w", it.Batch, rerr)
			}
			li, lerr := s.prepareList(work, d, m)
			if lerr != nil {
				return sum, it.Batch, fmt.Errorf("batch %d: the list was gone: %w", it.Batch, lerr)
			}
			in.ListID = li.id
			s.Logger().Warn("the list was gone; found or made it again", "export", in.Export, "run", in.RunID, "batch", it.Batch)
			res, err = s.sendBatch(ctx, work, m, in, b, d)
		}
		if err != nil {
			return sum, it.Batch, err
		}
		if len(res.Failed) > 0 {
			if why == "" {
				why = fmt.Sprintf("batch %d: %d contacts not delivered: %s", it.Batch, len(res.Failed), res.Failed[0].Reason)
			}
			incomplete = append(incomplete, it.Batch)
			continue
		}
		sum.Sent += res.Sent
		sum.Removed += res.Removed
		sum.Rejected += len(res.Rejected)
		sum.ModeSkipped += len(res.ModeSkipped)
		sum.Requests += res.Requests.Total
	}
	if len(incomplete) > 0 {
		// The state machine retries the group: what is done is not sent again.
		return sum, incomplete[0], &Transient{Msg: fmt.Sprintf("%s (%d of batches %d-%d incomplete)", why, len(incomplete), sum.First, sum.Last)}
	}
	return sum, 0, nil
}

// sendBatch sends one batch of a group through the group's destination and
// settles it: its result file once every contact is sent or rejected;
// otherwise its failure record (failures/), for finalize in case every
// retry fails, and the result with its Failed contacts.
func (s *Service) sendBatch(ctx, work context.Context, m *Manifest, in GroupInput, b *plan.Batch, groupDest Destination) (*BatchResult, error) {
	var prog batchProgress
	if err := getJSON(ctx, s.Store, progressKey(in.Export, in.RunID, in.Attempt, b.Seq), &prog); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	start := time.Now()
	bd := &batchDestination{Destination: groupDest, before: groupDest.Stats()}
	res := &BatchResult{Batch: b.Seq, StartedAt: start.UTC()}
	sendErr := s.send(work, bd, m, in, b, &prog, res)
	res.Requests = prog.Requests
	res.Requests.add(requestsOf(bd.Stats()))
	res.DurationMS = time.Since(start).Milliseconds()
	log := s.Logger().With("export", in.Export, "run", in.RunID, "attempt", in.Attempt, "batch", b.Seq)
	outOfTime := work.Err() != nil && ctx.Err() == nil
	if sendErr != nil {
		cerr := s.checkpoint(ctx, in, b.Seq, &prog, bd)
		if outOfTime && cerr == nil {
			log.Warn("batch out of time", "status", "retry", "removed", len(prog.Removed))
			return nil, &Transient{Msg: fmt.Sprintf("batch %d: stopped before the function's timeout with contacts left to send; "+
				"its retry resumes from the checkpoint", b.Seq)}
		}
		log.Error("batch stopped", "status", "error", "error", sendErr)
		return nil, errors.Join(sendErr, cerr)
	}
	if len(res.Failed) > 0 {
		if err := putJSON(ctx, s.Store, failureKey(in.Export, in.RunID, in.Attempt, b.Seq), res, store.PutOptions{}); err != nil {
			return nil, err
		}
		if err := s.checkpoint(ctx, in, b.Seq, &prog, bd); err != nil {
			return nil, err
		}
		log.Warn("batch incomplete", "status", "retry", "sent", res.Sent, "failed", len(res.Failed))
		return res, nil
	}
	if err := putJSON(ctx, s.Store, resultKey(in.Export, in.RunID, in.Attempt, b.Seq), res, store.PutOptions{}); err != nil {
		return nil, err
	}
	log.Info("batch sent", "status", "ok", "sent", res.Sent, "removed", res.Removed,
		"rejected", len(res.Rejected), "requests", res.Requests.Total)
	return res, nil
}

// batchDestination is a group's destination as one batch sees it: its
// Stats count the requests since the batch began.
type batchDestination struct {
	Destination
	before dest.Stats
}

func (d *batchDestination) Stats() dest.Stats {
	st := d.Destination.Stats()
	st.Requests -= d.before.Requests
	st.Retries -= d.before.Retries
	st.Throttled -= d.before.Throttled
	st.NetworkErrors -= d.before.NetworkErrors
	st.Timeouts -= d.before.Timeouts
	for code, n := range d.before.ByStatus {
		if st.ByStatus[code] -= n; st.ByStatus[code] == 0 {
			delete(st.ByStatus, code)
		}
	}
	return st
}

// groupBatches reads a group's batches out of batches.jsonl: the range
// from the first batch it needs over as many following ones as maxFetch
// allows (the whole group, but for batches of unusual size), in one ranged
// GET, each checked against its checksum before any of them is used.
type groupBatches struct {
	s     *Service
	in    GroupInput
	items []Item

	data     []byte
	from, to int // items[from:to] are in data, items[from] at its start
}

// maxFetch bounds the bytes of batches read at once (a group is about 30
// batches of 16 KB).
const maxFetch = 8 << 20

// batch returns the group's i-th batch.
func (gb *groupBatches) batch(ctx context.Context, i int) (*plan.Batch, error) {
	it := gb.items[i]
	if i < gb.from || i >= gb.to {
		if err := gb.fetch(ctx, i); err != nil {
			return nil, err
		}
	}
	off := it.Offset - gb.items[gb.from].Offset
	b, err := plan.ReadBatch(gb.data[off : off+it.Length])
	if err != nil {
		return nil, fmt.Errorf("batch %d: %w", it.Batch, err)
	}
	if b.Seq != it.Batch {
		return nil, &Corrupt{Msg: fmt.Sprintf("batch %d: %s holds batch %d at that place", it.Batch, plan.BatchesFile, b.Seq)}
	}
	return b, nil
}

// fetch reads items[i] and the batches right after it in batches.jsonl.
func (gb *groupBatches) fetch(ctx context.Context, i int) error {
	first := gb.items[i]
	if first.Length <= 0 || first.Length > maxBatchBytes || first.Offset < 0 {
		return fmt.Errorf("batch %d: a range of %d bytes at %d is not one segpilot's planner wrote", first.Batch, first.Length, first.Offset)
	}
	n, j := first.Length, i+1
	for ; j < len(gb.items); j++ {
		it, prev := gb.items[j], gb.items[j-1]
		if it.Length <= 0 || it.Offset != prev.Offset+prev.Length || n+it.Length > maxFetch {
			break
		}
		n += it.Length
	}
	key := batchesKey(gb.in.Export, gb.in.RunID, gb.in.Plan)
	rc, err := gb.s.Store.GetRange(ctx, key, first.Offset, n)
	if err != nil {
		return fmt.Errorf("batch %d: %w", first.Batch, err)
	}
	defer rc.Close()
	data := slices.Grow(gb.data[:0], int(n))[:n]
	if _, err := io.ReadFull(rc, data); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return &Corrupt{Msg: fmt.Sprintf("batches %d-%d: %s ends before the bytes the plan gives them: "+
				"it was changed after planning; start the run again to re-plan it", first.Batch, gb.items[j-1].Batch, key)}
		}
		return fmt.Errorf("batch %d: reading %s: %w", first.Batch, key, err)
	}
	for _, it := range gb.items[i:j] {
		line := data[it.Offset-first.Offset : it.Offset-first.Offset+it.Length]
		if got := plan.CRC32C(line); got != it.CRC32C {
			return &Corrupt{Msg: fmt.Sprintf("batch %d: its bytes in %s have checksum %s, the plan says %s: the file was changed after planning; "+
				"start the run again to re-plan it", it.Batch, key, got, it.CRC32C)}
		}
	}
	gb.data, gb.from, gb.to = data, i, j
	return nil
}

// beforeDeadline returns ctx with a deadline a margin before ctx's own (a
// fifth of the time left, at most deadlineMargin); without a deadline, ctx.
func beforeDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(deadlineMargin, time.Until(deadline)/5)
	return context.WithDeadline(ctx, deadline.Add(-margin))
}

// deadlineMargin is how long before its Lambda's timeout (300 s for
// syncbatch) a batch stops sending: time for the checkpoint, the failure
// record and the answer.
const deadlineMargin = 15 * time.Second

// maxBatchBytes bounds a batch: 100 profiles of at most a few KB each.
const maxBatchBytes = 16 << 20

// batchProgress is runs/<export>/<run>/attempts/<n>/progress/NNNNNN.json:
// what earlier tries of a removal batch did, so a retry does not repeat it
// (removals cost a request each, so they are checkpointed as they go), and
// the requests every try of a batch made.
type batchProgress struct {
	Removed  []string `json:"removed,omitempty"` // emails taken off the list
	Requests Requests `json:"requests"`          // made by earlier tries
}

// checkpointEvery is how many removals a killed worker may repeat.
const checkpointEvery = 5

// checkpoint records prog with the requests dest made so far. It is
// written even when ctx was cancelled (a local Ctrl-C), so a resume skips
// what was done.
func (s *Service) checkpoint(ctx context.Context, in GroupInput, seq int, prog *batchProgress, d Destination) error {
	saved := *prog
	saved.Requests.add(requestsOf(d.Stats()))
	return putJSON(context.WithoutCancel(ctx), s.Store, progressKey(in.Export, in.RunID, in.Attempt, seq), saved, store.PutOptions{})
}

func (s *Service) send(ctx context.Context, d Destination, m *Manifest, in GroupInput, b *plan.Batch, prog *batchProgress, res *BatchResult) error {
	if len(b.Upserts) > 0 { // the planner never mixes upserts and removals in a batch
		return s.sendUpserts(ctx, d, m, in, b, res)
	}
	return s.sendRemovals(ctx, d, m, in, b, prog, res)
}

// sendUpserts sends an upsert batch in one request (the adapter splits a
// refused one to find the contact it refuses).
func (s *Service) sendUpserts(ctx context.Context, d Destination, m *Manifest, in GroupInput, b *plan.Batch, res *BatchResult) error {
	types := make(map[string]dest.Type, len(m.Fields))
	for _, f := range m.Fields {
		types[f.Key] = f.Type
	}
	w := m.write()
	skipReason := w.SkipReason(m.Connection.Title())
	if m.Undo != nil {
		skipReason = "skipped: not in " + m.Connection.Title() + " any more (an undo never creates a contact)"
	}
	var have *existingSet
	if needsDirectory(m) {
		var err error
		if have, err = s.existing(ctx, in); err != nil {
			return err
		}
	}
	contacts := make([]dest.Contact, 0, len(b.Upserts))
	upserts := make([]plan.Upsert, 0, len(b.Upserts)) // those sent, for their outcomes
	for _, u := range b.Upserts {
		if have != nil && have.has(u.Profile.Email) != (w == dest.WriteUpdate) {
			res.ModeSkipped = append(res.ModeSkipped, RowIssue{Row: u.Row, Email: u.Profile.Email, Reason: skipReason})
			continue
		}
		c := dest.Contact{Email: u.Profile.Email, FirstName: u.Profile.FirstName, LastName: u.Profile.LastName}
		for _, cv := range u.Profile.Custom {
			c.Custom = append(c.Custom, dest.Value{Key: cv.Key, Type: types[cv.Key], Value: cv.Value})
		}
		contacts, upserts = append(contacts, c), append(upserts, u)
	}
	if len(contacts) == 0 {
		return nil
	}
	if have != nil {
		w = dest.WriteAny // filtered here: the destination is sent only what the mode allows
	}
	outcomes, err := d.Upsert(ctx, in.ListID, contacts, w)
	if err != nil {
		return err
	}
	for i, o := range outcomes {
		issue := RowIssue{Row: upserts[i].Row, Email: upserts[i].Profile.Email, Reason: o.Reason}
		switch o.Status {
		case dest.Sent:
			res.Sent++
		case dest.Rejected:
			res.Rejected = append(res.Rejected, issue)
		case dest.Skipped:
			res.ModeSkipped = append(res.ModeSkipped, issue)
		default:
			res.Failed = append(res.Failed, issue)
		}
	}
	return nil
}

// sendRemovals takes a removal batch's leavers off the list, checkpointed
// as it goes: every checkpointEvery where each costs a request
// (Autopilot), after each request where one takes many (Ortto: 100).
func (s *Service) sendRemovals(ctx context.Context, d Destination, m *Manifest, in GroupInput, b *plan.Batch, prog *batchProgress, res *BatchResult) error {
	done := make(map[string]bool, len(prog.Removed))
	for _, email := range prog.Removed {
		done[email] = true
	}
	var pending []string
	for _, email := range b.Removals {
		if !done[email] {
			pending = append(pending, email)
		}
	}
	chunk := max(checkpointEvery, m.Connection.Capabilities().RemoveBatch)
	for start := 0; start < len(pending); start += chunk {
		outcomes, err := d.Remove(ctx, in.ListID, pending[start:min(start+chunk, len(pending))])
		for _, o := range outcomes {
			switch {
			case o.Status == dest.Sent:
				prog.Removed = append(prog.Removed, o.Email)
			case err == nil:
				res.Failed = append(res.Failed, RowIssue{Email: o.Email, Reason: o.Reason})
			}
		}
		if err != nil { // a refused key, or ctx ended: the caller checkpoints what was done
			res.Removed = len(prog.Removed)
			return err
		}
		if err := s.checkpoint(ctx, in, b.Seq, prog, d); err != nil {
			return err
		}
	}
	res.Removed = len(prog.Removed)
	return nil
}

// checkFence stops a group whose attempt no longer holds its export: it
// was closed (its execution stopped, its process judged dead) and another
// attempt may run, whose sends this one must not interleave with.
func (s *Service) checkFence(ctx context.Context, in GroupInput) error {
	st, _, err := s.readState(ctx, in.Export)
	if err != nil {
		return err
	}
	if !st.Holder.is(in.RunID, in.Attempt) {
		return &Fenced{Msg: fmt.Sprintf("%s attempt %d no longer holds export %s (it was closed); nothing more of it is sent",
			in.RunID, in.Attempt, in.Export)}
	}
	return nil
}

// classify maps an error onto the types the state machine's Retry and
// Catch match (their names are Lambda's errorType), so every step sorts
// its errors here and nowhere else: a refused key, or none (the secret
// missing or empty), stops the run; a 429 past
// the client's retries is Throttled; what may pass (a retryable API
// answer, or an infrastructure error the deployment's Transient calls so:
// S3 or Secrets Manager throttling, 5xx, a dropped connection) is
// Transient, which the state machine retries with backoff. Anything else
// is returned as it is, and fails the step for good.
func (s *Service) classify(err error) error {
	if err == nil {
		return nil
	}
	var (
		unauth    *dest.UnauthorizedError
		refused   *Unauthorized
		corrupt   *Corrupt
		fenced    *Fenced
		throttled *Throttled
		transient *Transient
	)
	switch {
	case errors.As(err, &refused):
		return &Unauthorized{Msg: err.Error(), noKey: refused.noKey, api: refused.api, cause: err}
	case errors.Is(err, secrets.ErrNotFound), errors.Is(err, secrets.ErrEmpty):
		return &Unauthorized{Msg: err.Error(), noKey: true, cause: err}
	case errors.As(err, &unauth):
		return &Unauthorized{Msg: err.Error(), api: unauth.API, cause: err}
	case errors.As(err, &corrupt):
		return &Corrupt{Msg: err.Error()}
	case errors.As(err, &fenced):
		return &Fenced{Msg: err.Error()}
	case errors.As(err, &throttled), dest.IsThrottled(err):
		return &Throttled{Msg: err.Error(), cause: err}
	case errors.As(err, &transient), dest.IsRetryable(err), s.Transient != nil && s.Transient(err):
		return &Transient{Msg: err.Error(), cause: err}
	}
	return err
}

// retried says the state machine runs the group again after err (its
// Retry on Throttled and Transient): the group has not finished.
func retried(err error) bool {
	var (
		throttled *Throttled
		transient *Transient
	)
	return errors.As(err, &throttled) || errors.As(err, &transient)
}

func requestsOf(st dest.Stats) Requests {
	r := Requests{Total: st.Requests, Retries: st.Retries, Throttled: st.Throttled}
	for code, n := range st.ByStatus {
		if r.ByStatus == nil {
			r.ByStatus = map[string]int{}
		}
		r.ByStatus[strconv.Itoa(code)] = n
	}
	return r
}
