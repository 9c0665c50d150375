package run

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/segment"
)

// decision ends a queued delivery without an attempt: what handle found
// while the export was free, read from the state at one epoch.
type decision struct {
	s   *Service
	st  exportState
	q   *queueEntry
	e   *config.Export
	res *Result
	// detail is the technical cause, for the report's error field and the
	// page's details, when the message says what it means.
	detail string
	// fileInvalid: the file itself (or its size) is invalid, which the
	// same bytes under the same config always are.
	fileInvalid bool
}

// report is the run's report of this decision, with the plan's counts when
// there is a plan, else the result's: what was read of a file found
// invalid (over maxProfiles), or none.
func (d decision) report(status, msg string, m *Manifest, listReqs []Requests) *Report {
	rep := &Report{Export: d.res.Export, RunID: d.res.RunID, Trigger: d.q.Trigger, Source: d.q.Source,
		Status: status, Message: msg, Error: d.detail, InvalidFile: d.fileInvalid, FinishedAt: d.s.now(), Seq: decisionSeq(d.st.Epoch), Plan: d.res.Counts}
	if d.e != nil {
		rep.Mode, rep.List = d.e.Mode, d.e.List
	}
	if d.q.Undo != "" {
		rep.Undo = &UndoSummary{Of: d.q.Undo}
	}
	for _, r := range listReqs {
		rep.Requests.add(r)
	}
	if m != nil {
		rep.ConfigVersion, rep.Destination, rep.Plan, rep.PlannedAt = m.ConfigVersion, m.Connection.Title(), m.Counts, m.PlannedAt
		rep.FullResync = m.FullResync
		if m.Undo != nil {
			rep.Undo = m.Undo
		}
		rep.Split = m.Split
		rep.Base, rep.RequestsPerSecond = m.BaseKey, m.Connection.RequestsPerSecond
		if status == StatusHeld {
			rep.Brake = &Brake{MaxRemovalShare: d.e.MaxRemovalShare, Command: d.s.words().LiftBrakeCommand(d.e.Name, m.Source)}
		}
	}
	return rep
}

// decide ends the delivery: its report and its delivery record. A run that
// failed before sending (the key refused) accounts for every row: what it
// would have sent is failed, listed in rejected.csv with the reason.
func (d decision) decide(ctx context.Context, status, msg string, m *Manifest, listReqs ...Requests) (Result, step, error) {
	rep := d.report(status, msg, m, listReqs)
	if m != nil && status == StatusFailed {
		if err := d.s.accountUnsent(ctx, rep, m, "not sent: the run failed before sending (see its report)"); err != nil {
			return *d.res, stepRetry, err
		}
	}
	if err := d.s.publish(ctx, rep); err != nil {
		return *d.res, stepRetry, err
	}
	d.s.emit(rep)
	if err := d.s.settle(ctx, d.res.Export, d.res.RunID, d.q, Delivery{Status: status, Message: msg}); err != nil {
		return *d.res, stepRetry, err
	}
	d.res.Status, d.res.Message = status, msg
	return *d.res, stepDecided, nil
}

// upToDate ends a delivery of a file its run already exported: nothing to
// send, and no report (the run's stands).
func (d decision) upToDate(ctx context.Context, prev *Report, more string) (Result, step, error) {
	return d.done(ctx, prev, "this file was already exported with this configuration; nothing to send"+more)
}

// done ends a delivery whose run succeeded already, leaving the run's
// report as it is.
func (d decision) done(ctx context.Context, prev *Report, msg string) (Result, step, error) {
	if err := d.s.settle(ctx, d.res.Export, d.res.RunID, d.q, Delivery{Status: StatusUpToDate, Message: msg}); err != nil {
		return *d.res, stepRetry, err
	}
	d.res.Status, d.res.Message, d.res.Counts = StatusUpToDate, msg, prev.Plan
	return *d.res, stepDecided, nil
}

// again ends a delivery of a file its run already found invalid: the
// run's report stands, nothing is planned or counted again.
func (d decision) again(ctx context.Context, prev *Report) (Result, step, error) {
	msg := "already found invalid (see the run's report): " + prev.Message
	if err := d.s.settle(ctx, d.res.Export, d.res.RunID, d.q, Delivery{Status: StatusInvalid, Message: msg}); err != nil {
		return *d.res, stepRetry, err
	}
	d.res.Status, d.res.Message, d.res.Counts = StatusInvalid, msg, prev.Plan
	return *d.res, stepDecided, nil
}

// notYet records a failure before the claim that a later drain may get
// past (the destination unreachable, S3 failing): the delivery stays
// queued, and its run's report says so until then.
func (d decision) notYet(ctx context.Context, what string, cause error, m *Manifest, listReqs ...Requests) error {
	err := fmt.Errorf("%s: %w", what, cause)
	title := ""
	if m != nil {
		title = m.Connection.Title()
	}
	d.detail = cause.Error()
	rep := d.report(StatusFailed, what+" ("+briefCause(title, cause)+"); the file stays queued and runs on the next trigger "+
		"(another file, the schedule, or a run of this export ending)", m, listReqs)
	if m != nil {
		if aerr := d.s.accountUnsent(ctx, rep, m, "not sent yet: "+what); aerr != nil {
			return fmt.Errorf("%w (and recording it: %v)", err, aerr)
		}
	}
	if perr := d.s.publish(context.WithoutCancel(ctx), rep); perr != nil {
		return fmt.Errorf("%w (and recording it: %v)", err, perr)
	}
	d.s.emit(rep)
	d.res.Status, d.res.Message = StatusFailed, rep.Message
	return err
}

// briefCause says in a few words why a call to the destination (title,
// when known) failed; the whole chain goes to the report's error field.
func briefCause(title string, err error) string {
	var re *dest.RequestError
	switch {
	case errors.As(err, &re) && re.Status != 0:
		return fmt.Sprintf("%s answered %d to %s %s", cmp.Or(title, re.API), re.Status, re.Method, segment.MaskEmails(re.Path))
	case errors.As(err, &re):
		return "no answer from " + cmp.Or(title, re.API) + " to " + re.Method + " " + segment.MaskEmails(re.Path)
	case errors.Is(err, dest.ErrInProgress):
		return "another run is creating the list and has not finished"
	}
	return clip(segment.MaskEmails(err.Error()), 200)
}

// clip cuts s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// accountUnsent fills rep's outcome for a plan of which nothing was sent:
// every row is unchanged, a duplicate, rejected in the file, or failed
// for reason, and rejected.csv (at rep.Rejected, or the run's when unset)
// lists them: the file's rejections, then every contact that was to be
// sent or removed.
func (s *Service) accountUnsent(ctx context.Context, rep *Report, m *Manifest, reason string) error {
	rep.Outcome = Outcome{Rows: m.Counts.Rows, Unchanged: m.Counts.Unchanged - m.Counts.Resent, Duplicates: m.Counts.Duplicates,
		Rejected: m.Counts.Rejected, Failed: m.Counts.Added + m.Counts.Changed + m.Counts.Resent, RemoveFailed: m.Counts.Removed,
		OtherGroups: m.Counts.OtherGroups}
	rep.Batches.Total, rep.Batches.Failed = len(m.Batches), len(m.Batches)
	if rep.Rejected == "" {
		rep.Rejected = decisionRejectedKey(m.Export, m.RunID)
	}
	var issues []RowIssue
	for _, ref := range m.Batches {
		b, err := s.readPlannedBatch(ctx, m, ref)
		if err != nil {
			return err
		}
		issues = append(issues, unsent(b, reason)...)
	}
	if err := s.writeRejected(ctx, m, rep.Rejected, issues); err != nil {
		return err
	}
	return s.pageDetails(ctx, m, rep, issues, &timeline{})
}

// unsent lists a batch's contacts as not delivered, for reason.
func unsent(b *plan.Batch, reason string) []RowIssue {
	out := make([]RowIssue, 0, len(b.Upserts)+len(b.Removals))
	for _, u := range b.Upserts {
		out = append(out, RowIssue{Row: u.Row, Email: u.Profile.Email, Reason: reason})
	}
	for _, e := range b.Removals {
		out = append(out, RowIssue{Email: e, Reason: "not removed from the list: " + reason})
	}
	return out
}
