package run

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
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
	StartedAt time.Time `json:"startedAt,omitzero"`
	Resumed   int       `json:"resumed,omitempty"`
	MapError  *MapError `json:"mapError,omitempty"`
}

// MapError is Step Functions' error object.
type MapError struct {
	Error string `json:"Error"`
	Cause string `json:"Cause"`
}

// Finalize gathers a run's batch results into report.json and rejected.csv
// and, only when nothing failed, promotes the run's profile set to the
// export's snapshot, so the next run diffs against what Autopilot holds.
func (s *Service) Finalize(ctx context.Context, in FinalizeInput) (*Report, error) {
	rep, err := s.finalize(ctx, in)
	return rep, s.classify(err)
}

func (s *Service) finalize(ctx context.Context, in FinalizeInput) (*Report, error) {
	m, err := s.readManifest(ctx, in.Export, in.RunID)
	if err != nil {
		return nil, fmt.Errorf("finalizing %s: %w", in.RunID, err)
	}
	rep := &Report{Export: m.Export, RunID: m.RunID, Trigger: m.Trigger, Source: m.Source, Destination: m.Connection.Title(),
		ConfigVersion: m.ConfigVersion, Mode: m.Mode, List: m.List, Plan: m.Counts, PlannedAt: m.PlannedAt,
		Rejected: rejectedKey(m.Export, m.RunID)}
	rep.Outcome = Outcome{Rows: m.Counts.Rows, Unchanged: m.Counts.Unchanged,
		Duplicates: m.Counts.Duplicates, Rejected: m.Counts.Rejected}
	rep.Batches.Total, rep.Batches.Resumed = len(m.Batches), in.Resumed
	var listReqs Requests
	if err := getJSON(ctx, s.Store, listRequestsKey(m.Export, m.RunID), &listReqs); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	rep.Requests.add(listReqs)

	var issues []RowIssue // API rejections and failures, for rejected.csv
	var tl timeline       // the batches' timings, for the run's page
	apiRejected := map[string]bool{}
	cause := "the batch did not complete"
	if in.MapError != nil {
		cause = in.MapError.Error + ": " + in.MapError.Cause
	}
	for _, ref := range m.Batches {
		var res BatchResult
		err := getJSON(ctx, s.Store, resultKey(m.Export, m.RunID, ref.Seq), &res)
		if err == nil {
			rep.Batches.Settled++
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		} else {
			rep.Batches.Failed++
			res, err = s.failedBatch(ctx, m, ref, cause)
			if err != nil {
				return nil, err
			}
		}
		tl.add(res)
		rep.Outcome.Sent += res.Sent
		rep.Outcome.Removed += res.Removed
		rep.Outcome.RejectedByAPI += len(res.Rejected)
		rep.Requests.add(res.Requests)
		for _, r := range res.Rejected {
			apiRejected[r.Email] = true
			issues = append(issues, RowIssue{Row: r.Row, Email: r.Email, Reason: "rejected by " + m.Connection.Title() + ": " + r.Reason})
		}
		for _, f := range res.Failed {
			if f.Row == 0 { // a removal
				rep.Outcome.RemoveFailed++
			} else {
				rep.Outcome.Failed++
			}
			issues = append(issues, RowIssue{Row: f.Row, Email: f.Email, Reason: "failed: " + f.Reason})
		}
	}

	if err := s.writeRejected(ctx, m, issues); err != nil {
		return nil, err
	}
	refused, err := s.readRefusal(ctx, m.Export, m.RunID, cmp.Or(in.StartedAt, m.PlannedAt))
	if err != nil {
		return nil, err
	}
	rep.Status = StatusSucceeded
	failed := rep.Batches.Failed > 0 || in.MapError != nil
	switch {
	case failed && refused != nil: // why the Map stopped (every batch settling says the key works after all)
		rep.Status, rep.Message = StatusFailed, refused.Message
	case failed:
		rep.Status = StatusFailed
		rep.Message = fmt.Sprintf("%d of %d batches failed (%s); their contacts are in rejected.csv and the next run retries them",
			rep.Batches.Failed, rep.Batches.Total, cause)
	}
	if rep.Status == StatusSucceeded {
		switch may, err := s.mayPromote(ctx, m); {
		case err != nil:
			return nil, err
		case may == promoteNow:
			if err := s.promote(ctx, m, apiRejected); err != nil {
				return nil, err
			}
			rep.SnapshotPromoted = true
		case may == promotedBefore:
			rep.SnapshotPromoted = true
		default:
			rep.Message = "the export's lock had passed to another run before this one finished (e.g. this execution was " +
				"redriven after being taken over), so its snapshot was not promoted: it could be older than that run's; " +
				"the next run sends what differs"
		}
	}
	rep.FinishedAt = s.now()
	rep.StartedAt = cmp.Or(in.StartedAt, m.PlannedAt)
	rep.DurationSeconds = rep.FinishedAt.Sub(rep.StartedAt).Seconds()
	rep.FloorSeconds = floorSeconds(m)
	if err := s.pageDetails(ctx, m, rep, issues, &tl); err != nil {
		return nil, err
	}
	if err := s.putReport(ctx, rep); err != nil {
		return nil, err
	}
	s.Logger().Info("run "+rep.Status, "export", m.Export, "run", m.RunID, "status", rep.Status,
		"sent", rep.Outcome.Sent, "rejected", rep.Outcome.Rejected+rep.Outcome.RejectedByAPI,
		"failed", rep.Outcome.Failed, "removed", rep.Outcome.Removed)
	s.afterRun(ctx, m.Export, m.RunID)
	return rep, nil
}

// failedBatch accounts for a batch that never settled: what its last attempt
// recorded, or else every contact in it as failed.
func (s *Service) failedBatch(ctx context.Context, m *Manifest, ref plan.BatchRef, cause string) (BatchResult, error) {
	seq := ref.Seq
	var last BatchResult
	err := getJSON(ctx, s.Store, failureKey(m.Export, m.RunID, seq), &last)
	if err == nil {
		return last, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return last, err
	}
	b, err := s.readPlannedBatch(ctx, m, ref)
	if err != nil {
		return last, err
	}
	res := BatchResult{Batch: seq}
	for _, u := range b.Upserts {
		res.Failed = append(res.Failed, RowIssue{Row: u.Row, Email: u.Profile.Email, Reason: cause})
	}
	for _, e := range b.Removals {
		res.Failed = append(res.Failed, RowIssue{Email: e, Reason: "not removed from the list: " + cause})
	}
	return res, nil
}

// readPlannedBatch reads one batch of the plan by its index entry: its
// line of batches.jsonl (a file of its own, planned by an earlier
// segpilot). Like every reader of a batch not about to be sent, it does
// not check the checksum.
func (s *Service) readPlannedBatch(ctx context.Context, m *Manifest, ref plan.BatchRef) (*plan.Batch, error) {
	if ref.Length == 0 {
		return s.readBatchFile(ctx, m.Export, m.RunID, ref.Seq, "")
	}
	if ref.Length > maxBatchBytes {
		return nil, fmt.Errorf("batch %d: a range of %d bytes is not one segpilot's planner wrote", ref.Seq, ref.Length)
	}
	key := batchesKey(m.Export, m.RunID)
	rc, err := s.Store.GetRange(ctx, key, ref.Offset, ref.Length)
	if err != nil {
		return nil, fmt.Errorf("batch %d: %w", ref.Seq, err)
	}
	defer rc.Close()
	raw := make([]byte, ref.Length)
	if _, err := io.ReadFull(rc, raw); err != nil {
		return nil, fmt.Errorf("batch %d: reading %s: %w", ref.Seq, key, err)
	}
	b, err := plan.ReadBatch(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("batch %d: %w", ref.Seq, err)
	}
	return b, nil
}

// writeRejected writes rejected.csv: the file's invalid rows, then the
// contacts Autopilot refused or that could not be delivered.
func (s *Service) writeRejected(ctx context.Context, m *Manifest, issues []RowIssue) error {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(func() error {
			rc, _, err := s.Store.Get(ctx, inputRejectedKey(m.Export, m.RunID))
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
	_, err := s.Store.Put(ctx, rejectedKey(m.Export, m.RunID), pr, store.PutOptions{ContentType: "text/csv"})
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("writing rejected.csv: %w", err)
	}
	return nil
}

// Whether finalize may promote a run's snapshot.
const (
	promoteNow     = iota
	promotedBefore // an earlier attempt of this finalize promoted it, then released the lock
	promoteNot     // another run holds (or held) the lock since: its snapshot may be newer
)

// mayPromote guards the export's snapshot against a finalize that runs
// after its run lost the lock (a redriven execution, a run taken over as
// stale): only the lock's holder promotes. Without a lock (runs started
// before locks existed) it may.
func (s *Service) mayPromote(ctx context.Context, m *Manifest) (int, error) {
	cur, _, err := s.readLock(ctx, m.Export)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return promoteNow, nil
	case err != nil:
		return promoteNot, err
	case cur.Holder == m.RunID:
		return promoteNow, nil
	}
	prev, err := ReadReport(ctx, s.Store, m.Export, m.RunID)
	switch {
	case err == nil && prev.SnapshotPromoted && !prev.FinishedAt.Before(m.PlannedAt):
		return promotedBefore, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return promoteNot, err
	}
	return promoteNot, nil
}

// promote copies the run's planned snapshot to state/<export>/snapshot,
// leaving out contacts Autopilot rejected (they are not on the list).
func (s *Service) promote(ctx context.Context, m *Manifest, drop map[string]bool) error {
	rc, _, err := s.Store.Get(ctx, plannedSnapshotKey(m.Export, m.RunID))
	if err != nil {
		return fmt.Errorf("promoting snapshot: %w", err)
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(plan.FilterSnapshot(rc, pw, func(email string) bool { return drop[email] }))
	}()
	_, err = s.Store.Put(ctx, snapshotKey(m.Export), pr, store.PutOptions{ContentType: "text/plain"})
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("promoting snapshot: %w", err)
	}
	return nil
}

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
