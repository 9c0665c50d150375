package run

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/store"
)

// Outcome is where every input row ended. The counts reconcile:
// Rows = Sent + Unchanged + Duplicates + Rejected + RejectedByAPI + Failed + Skipped.
type Outcome struct {
	Rows          int `json:"rows"`
	Sent          int `json:"sent"`
	Unchanged     int `json:"unchanged"`
	Duplicates    int `json:"duplicates"`
	Rejected      int `json:"rejected"`              // failed validation in the file
	RejectedByAPI int `json:"rejectedByApi"`         // the destination refused the contact
	Failed        int `json:"failed"`                // not delivered after every retry
	Skipped       int `json:"skipped,omitempty"`     // left alone by the export's mode (update, create)
	OtherGroups   int `json:"otherGroups,omitempty"` // a split export's contacts of another group, or held out: not this run's
	Removed       int `json:"removed"`               // taken off the list (mirror)
	RemoveFailed  int `json:"removeFailed"`
}

// Reconciles reports whether every row is accounted for.
func (o Outcome) Reconciles() bool {
	return o.Rows == o.Sent+o.Unchanged+o.Duplicates+o.Rejected+o.RejectedByAPI+o.Failed+o.Skipped+o.OtherGroups
}

// BatchCounts summarise an attempt's batches.
type BatchCounts struct {
	Total   int `json:"total"`
	Settled int `json:"settled"`
	Failed  int `json:"failed"`
}

// Report is a run's record: runs/<export>/<run>/attempts/<n>/report.json
// for attempt n (exactly one, create-only), and runs/<export>/<run>/report.json
// for the run's latest outcome, an attempt's or a decision made without
// one (superseded, held, invalid, refused, failed before sending).
type Report struct {
	Export        string        `json:"export"`
	RunID         string        `json:"runId"`
	Attempt       int64         `json:"attempt,omitempty"` // 0: decided without an attempt
	Prior         int           `json:"priorAttempts,omitempty"`
	Status        string        `json:"status"`
	Message       string        `json:"message,omitempty"`
	Error         string        `json:"error,omitempty"` // the technical cause, when Message tells a person what it means
	Notes         []string      `json:"notes,omitempty"` // what the destination said worth knowing (e.g. two lists with the title)
	Trigger       string        `json:"trigger"`
	Source        Source        `json:"source"`
	ConfigVersion string        `json:"configVersion,omitempty"`
	Mode          string        `json:"mode,omitempty"`
	FullResync    bool          `json:"fullResync,omitempty"` // every contact of the file sent, unchanged ones too
	Undo          *UndoSummary  `json:"undo,omitempty"`       // an undo: the run it reverses, and what it planned
	Split         *SplitSummary `json:"split,omitempty"`      // a split export's group: its share, and the split's last change
	List          string        `json:"list,omitempty"`
	Destination   string        `json:"destination,omitempty"` // "Autopilot", "Ortto": the connection's kind, as the page names it
	Plan          plan.Counts   `json:"plan"`
	// Base is the snapshot the plan diffed against: after an earlier
	// attempt of the same run, it holds what that attempt delivered, so
	// this one's plan is exactly what was left.
	Base            string      `json:"base,omitempty"`
	Outcome         Outcome     `json:"outcome"`
	Requests        Requests    `json:"requests"`
	Batches         BatchCounts `json:"batches"`
	PlannedAt       time.Time   `json:"plannedAt,omitzero"`
	StartedAt       time.Time   `json:"startedAt,omitzero"` // when this attempt began
	FinishedAt      time.Time   `json:"finishedAt,omitzero"`
	DurationSeconds float64     `json:"durationSeconds"` // this attempt: from its start (planning included) to its end
	FloorSeconds    float64     `json:"floorSeconds"`    // requests / requestsPerSecond: the fastest any exporter could go
	// RateFound is the highest rate, in requests a second, the
	// destination accepted over any 10 s while it answered 429s, when
	// that is well under the connection's requestsPerSecond: the budget
	// is set too high.
	RateFound        float64 `json:"rateFound,omitempty"`
	SnapshotPromoted bool    `json:"snapshotPromoted"`
	// Refill: the list was deleted (and made again) while the attempt
	// sent, so it leaves the export no snapshot: the next attempt sends
	// every contact.
	Refill bool `json:"refill,omitempty"`
	// Requeued: the attempt's file is queued again (its execution never
	// started, or its list must be refilled); the run goes on.
	Requeued bool `json:"requeued,omitempty"`
	// Closing: the run's report while its attempt's Map has failed and
	// batches may still be in flight; the attempt's report replaces it
	// once they have ended.
	Closing bool `json:"closing,omitempty"`
	// InvalidFile: invalid for the file itself (or its size), not for a
	// destination that did not match: the same file is not tried again.
	InvalidFile bool `json:"invalidFile,omitempty"`
	// Snapshot is the key of the snapshot the attempt leaves (the plan's
	// target, but for contacts not delivered): the export's state points
	// at it once the attempt is closed.
	Snapshot string `json:"snapshot,omitempty"`
	Rejected string `json:"rejectedCsv,omitempty"` // key of rejected.csv
	// Seq orders a run's outcomes: 2n for attempt n, 2e+1 for a decision
	// made while the export's epoch was e. The run's report.json only ever
	// moves to a greater Seq.
	Seq int64 `json:"seq"`

	// For the run's page (report.html), which shows nothing report.json
	// does not hold; each is bounded (see page.go).
	RequestsPerSecond float64    `json:"requestsPerSecond,omitempty"` // the connection's budget
	Timeline          *Timeline  `json:"timeline,omitempty"`          // this attempt's batch requests over time
	Rejections        []RowIssue `json:"rejections,omitempty"`        // the first MaxRejections rows of rejected.csv
	RejectionsTotal   int        `json:"rejectionsTotal,omitempty"`   // rows in rejected.csv
	EmailsShown       bool       `json:"emailsShown,omitempty"`       // Rejections' emails unmasked (the export's showEmails)
	Brake             *Brake     `json:"brake,omitempty"`             // a held run's brake
	Page              string     `json:"reportHtml,omitempty"`        // key of report.html
}

func attemptSeq(n int64) int64      { return 2 * n }
func decisionSeq(epoch int64) int64 { return 2*epoch + 1 }

// publish makes rep the run's latest outcome (runs/<export>/<run>/report.json,
// and its page): by compare-and-swap, so an outcome published late never
// replaces a newer one. The page is written before report.json (which
// marks it final), and written again from the newer report when one
// landed in between.
func (s *Service) publish(ctx context.Context, rep *Report) error {
	key := runReportKey(rep.Export, rep.RunID)
	wrote := false
	for {
		var cur Report
		info, err := getJSONInfo(ctx, s.Store, key, &cur)
		found := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// A decision (no attempt) never replaces the report of an attempt
		// that changed the list: that is the record of what the run sent,
		// and what undo reads; the decision is in its delivery's record.
		if found && (cur.Seq > rep.Seq || rep.Attempt == 0 && cur.SnapshotPromoted) {
			if wrote { // ours may have replaced its page
				return s.putPage(ctx, &cur)
			}
			return nil
		}
		if err := s.putPage(ctx, rep); err != nil {
			return err
		}
		wrote = true
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding %s: %w", key, err)
		}
		opts := store.PutOptions{ContentType: "application/json", IfNoneMatch: !found}
		if found {
			opts.IfMatch = info.ETag
		}
		_, err = s.Store.Put(ctx, key, bytes.NewReader(append(b, '\n')), opts)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, store.ErrExists) && !errors.Is(err, store.ErrChanged):
			return fmt.Errorf("writing %s: %w", key, err)
		}
	}
}

// emit writes rep's outcome and figures as one EMF record, when the
// Service has a metrics sink. Called once per attempt (by whoever wrote its
// report) and once per decision, so every outcome is counted.
func (s *Service) emit(rep *Report) {
	if s.Metrics == nil {
		return
	}
	if err := EmitMetrics(s.Metrics, rep); err != nil {
		s.Logger().Warn("writing metrics", "export", rep.Export, "run", rep.RunID, "status", rep.Status, "error", err)
	}
}

func putJSON(ctx context.Context, s store.ObjectStore, key string, v any, opts store.PutOptions) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key, err)
	}
	opts.ContentType = "application/json"
	if _, err := s.Put(ctx, key, bytes.NewReader(append(b, '\n')), opts); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	return nil
}

// getJSON decodes an object; a missing object returns an error wrapping store.ErrNotFound.
func getJSON(ctx context.Context, s store.ObjectStore, key string, v any) error {
	_, err := getJSONInfo(ctx, s, key, v)
	return err
}

// getJSONInfo is getJSON that also returns the object's info (its ETag).
func getJSONInfo(ctx context.Context, s store.ObjectStore, key string, v any) (store.ObjectInfo, error) {
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return info, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return info, fmt.Errorf("reading %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return info, fmt.Errorf("decoding %s: %w", key, err)
	}
	return info, nil
}

// ReadReport returns a run's latest outcome, or an error wrapping store.ErrNotFound.
func ReadReport(ctx context.Context, s store.ObjectStore, export, runID string) (*Report, error) {
	var r Report
	if err := getJSON(ctx, s, runReportKey(export, runID), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ReadAttemptReport returns attempt n's report, or an error wrapping
// store.ErrNotFound while the attempt has not ended.
func ReadAttemptReport(ctx context.Context, s store.ObjectStore, export, runID string, n int64) (*Report, error) {
	var r Report
	if err := getJSON(ctx, s, attemptReportKey(export, runID, n), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListReports returns every attempt's report and every decision made
// without one, of every run of an export, oldest first. The run's latest
// (runs/<export>/<run>/report.json) stands for the attempt it copies, with
// its page.
func ListReports(ctx context.Context, s store.ObjectStore, export string) ([]*Report, error) {
	objs, err := s.List(ctx, "runs/"+export+"/")
	if err != nil {
		return nil, err
	}
	latest := map[string]*Report{} // by run
	var attempts []*Report
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/report.json") {
			continue
		}
		var r Report
		if err := getJSON(ctx, s, o.Key, &r); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, err
		}
		if strings.Contains(o.Key, "/attempts/") {
			attempts = append(attempts, &r)
		} else {
			latest[r.RunID] = &r
		}
	}
	var out []*Report
	listed := map[string]bool{} // runs whose latest report is an attempt's, listed
	for _, a := range attempts {
		if l := latest[a.RunID]; l != nil && l.Seq == a.Seq {
			a = l
			listed[a.RunID] = true
		}
		out = append(out, a)
	}
	for _, l := range latest {
		// A decision, or a closing attempt, whose own report is not
		// written yet.
		if !listed[l.RunID] {
			out = append(out, l)
		}
	}
	sortReports(out)
	return out, nil
}

// sortReports orders reports by when they began (planned or started),
// else when they ended.
func sortReports(rs []*Report) {
	when := func(r *Report) time.Time { return cmp.Or(r.StartedAt, r.PlannedAt, r.FinishedAt) }
	sort.SliceStable(rs, func(i, j int) bool { return when(rs[i]).Before(when(rs[j])) })
}
