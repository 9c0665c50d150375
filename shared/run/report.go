package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/store"
)

// Outcome is where every input row ended. The counts reconcile:
// Rows = Sent + Unchanged + Duplicates + Rejected + RejectedByAPI + Failed.
type Outcome struct {
	Rows          int `json:"rows"`
	Sent          int `json:"sent"`
	Unchanged     int `json:"unchanged"`
	Duplicates    int `json:"duplicates"`
	Rejected      int `json:"rejected"`      // failed validation in the file
	RejectedByAPI int `json:"rejectedByApi"` // the destination refused the contact
	Failed        int `json:"failed"`        // not delivered after every retry
	Removed       int `json:"removed"`       // taken off the list (mirror)
	RemoveFailed  int `json:"removeFailed"`
}

// Reconciles reports whether every row is accounted for.
func (o Outcome) Reconciles() bool {
	return o.Rows == o.Sent+o.Unchanged+o.Duplicates+o.Rejected+o.RejectedByAPI+o.Failed
}

// BatchCounts summarise a run's batches.
type BatchCounts struct {
	Total   int `json:"total"`
	Settled int `json:"settled"`
	Failed  int `json:"failed"`
	Resumed int `json:"resumed,omitempty"` // settled by an earlier attempt of the run: not sent again
}

// Report is runs/<export>/<run>/report.json: the run's record.
type Report struct {
	Export           string      `json:"export"`
	RunID            string      `json:"runId"`
	Status           string      `json:"status"`
	Message          string      `json:"message,omitempty"`
	Trigger          string      `json:"trigger"`
	Source           Source      `json:"source"`
	ConfigVersion    string      `json:"configVersion,omitempty"`
	Mode             string      `json:"mode,omitempty"`
	List             string      `json:"list,omitempty"`
	Destination      string      `json:"destination,omitempty"` // "Autopilot", "Ortto": the connection's kind, as the page names it
	Plan             plan.Counts `json:"plan"`
	Outcome          Outcome     `json:"outcome"`
	Requests         Requests    `json:"requests"`
	Batches          BatchCounts `json:"batches"`
	PlannedAt        time.Time   `json:"plannedAt,omitzero"`
	StartedAt        time.Time   `json:"startedAt,omitzero"` // when this attempt began (a resumed run's plan is older)
	FinishedAt       time.Time   `json:"finishedAt,omitzero"`
	DurationSeconds  float64     `json:"durationSeconds"` // this attempt: from its start (planning included) to finalize
	FloorSeconds     float64     `json:"floorSeconds"`    // requests / requestsPerSecond: the fastest any exporter could go
	SnapshotPromoted bool        `json:"snapshotPromoted"`
	Rejected         string      `json:"rejectedCsv,omitempty"` // key of rejected.csv

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

// putReport writes a run's report.json and, when the Service has a metrics
// sink, the run's outcome and figures as one EMF record: every place a run
// ends (ingest refusing it, finalize closing it, a later run finding it
// abandoned) writes its report here, so every outcome is counted.
func (s *Service) putReport(ctx context.Context, rep *Report) error {
	// The page first: report.json marks the record final, so the page is
	// there by then.
	if err := s.putPage(ctx, rep); err != nil {
		return err
	}
	if err := putJSON(ctx, s.Store, reportKey(rep.Export, rep.RunID), rep, store.PutOptions{}); err != nil {
		return err
	}
	if s.Metrics != nil {
		if err := EmitMetrics(s.Metrics, rep); err != nil {
			s.Logger().Warn("writing metrics", "export", rep.Export, "run", rep.RunID, "status", rep.Status, "error", err)
		}
	}
	return nil
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
	rc, _, err := s.Get(ctx, key)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding %s: %w", key, err)
	}
	return nil
}

// ReadReport returns a run's report, or an error wrapping store.ErrNotFound.
func ReadReport(ctx context.Context, s store.ObjectStore, export, runID string) (*Report, error) {
	var r Report
	if err := getJSON(ctx, s, reportKey(export, runID), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListReports returns every report of an export, oldest first.
func ListReports(ctx context.Context, s store.ObjectStore, export string) ([]*Report, error) {
	objs, err := s.List(ctx, "runs/"+export+"/")
	if err != nil {
		return nil, err
	}
	var out []*Report
	for _, o := range objs {
		var r Report
		if len(o.Key) < len("report.json") || o.Key[len(o.Key)-len("report.json"):] != "report.json" {
			continue
		}
		if err := getJSON(ctx, s, o.Key, &r); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, &r)
	}
	sortReports(out)
	return out, nil
}
