package run

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/store"
)

// What report.json keeps for the run's page, bounded whatever the run's
// size: a 1,000,000-row run's report is as small as a 100-row one's.
const (
	MaxTimelineSlots = 60  // the requests timeline has at most this many points
	MaxRejections    = 100 // the first rows of rejected.csv kept in the report
)

// Timeline is an attempt's batch requests over time, in equal slots: slot
// i covers [Start + i·SlotSeconds, Start + (i+1)·SlotSeconds).
type Timeline struct {
	Start       time.Time      `json:"start"`
	SlotSeconds float64        `json:"slotSeconds"`
	Slots       []TimelineSlot `json:"slots"`
}

// TimelineSlot is what the batches did in one slot. A batch's requests are
// spread over the slots its time spans (a paced batch waits for its turn
// between them), so Requests may be fractional; its 429s and retries are
// marked in the slot where it ended.
type TimelineSlot struct {
	Requests  float64 `json:"requests"`
	Throttled int     `json:"throttled,omitempty"`
	Retries   int     `json:"retries,omitempty"`
}

// Brake is what held a mirror run, beyond the plan's counts (removed,
// previous, unique), and how to lift it.
type Brake struct {
	MaxRemovalShare float64 `json:"maxRemovalShare"`
	Command         string  `json:"command"` // lifts the brake for one run of this file
}

// putPage writes the run's report.html and records its key in rep, when
// the Service has a Page renderer. A page that cannot be rendered is
// logged, not fatal: the record matters more than its view.
func (s *Service) putPage(ctx context.Context, rep *Report) error {
	if s.Page == nil {
		return nil
	}
	rep.Page = runPageKey(rep.Export, rep.RunID)
	html, err := s.Page(rep)
	if err != nil {
		rep.Page = ""
		s.Logger().Error("rendering report.html", "export", rep.Export, "run", rep.RunID, "error", err)
		return nil
	}
	if _, err := s.Store.Put(ctx, rep.Page, bytes.NewReader(html), store.PutOptions{ContentType: "text/html; charset=utf-8"}); err != nil {
		return fmt.Errorf("writing report.html: %w", err)
	}
	return nil
}

// pageDetails adds to a finalized report what its page shows beyond the
// counts: the budget, the requests timeline and the first rejected rows.
func (s *Service) pageDetails(ctx context.Context, m *Manifest, rep *Report, issues []RowIssue, tl *timeline) error {
	rep.RequestsPerSecond = m.Connection.RequestsPerSecond
	rep.Timeline = tl.build(rep.StartedAt, rep.FinishedAt)
	rep.EmailsShown = m.ShowEmails
	rep.RejectionsTotal = m.Counts.Rejected + m.Counts.Duplicates + len(issues)
	first, err := s.firstRejections(ctx, m)
	if err != nil {
		return err
	}
	first = append(first, issues[:min(len(issues), MaxRejections-len(first))]...)
	rep.Rejections = make([]RowIssue, len(first))
	for i, r := range first {
		if !m.ShowEmails {
			r.Email, r.Reason = segment.MaskEmail(r.Email), segment.MaskEmails(r.Reason)
		}
		rep.Rejections[i] = r
	}
	return nil
}

// firstRejections reads up to MaxRejections rows of the plan's
// rejected.csv (the file's invalid rows and dropped duplicates).
func (s *Service) firstRejections(ctx context.Context, m *Manifest) ([]RowIssue, error) {
	key := inputRejectedKey(m.Export, m.RunID, m.Base)
	rc, _, err := s.Store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	defer rc.Close()
	r := csv.NewReader(rc)
	r.FieldsPerRecord = 3
	if _, err := r.Read(); err != nil && !errors.Is(err, io.EOF) { // the header
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	var out []RowIssue
	for len(out) < MaxRejections {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", key, err)
		}
		row, err := strconv.Atoi(rec[0])
		if err != nil {
			return nil, fmt.Errorf("reading %s: row %q: %w", key, rec[0], err)
		}
		out = append(out, RowIssue{Row: row, Email: plainCSVCell(rec[1]), Reason: plainCSVCell(rec[2])})
	}
	return out, nil
}

// plainCSVCell undoes segment.SafeCSVCell: the page is no spreadsheet.
func plainCSVCell(s string) string {
	if len(s) > 1 && s[0] == '\'' && segment.SafeCSVCell(s[1:]) == s {
		return s[1:]
	}
	return s
}

// timeline gathers the batches' timings for Timeline.
type timeline struct{ spans []BatchResult }

func (tl *timeline) add(res BatchResult) {
	if !res.StartedAt.IsZero() && res.Requests.Total > 0 {
		tl.spans = append(tl.spans, res)
	}
}

// build buckets the batches that ran in [from, to] (a resumed run's earlier
// attempts are left out) into at most MaxTimelineSlots slots of a round
// width, at least a second so a slot's rate reads as requests per second.
func (tl *timeline) build(from, to time.Time) *Timeline {
	total := to.Sub(from).Seconds()
	if len(tl.spans) == 0 || total <= 0 {
		return nil
	}
	width := roundUp(total / MaxTimelineSlots)
	n := min(MaxTimelineSlots, max(1, int(math.Ceil(total/width))))
	out := &Timeline{Start: from, SlotSeconds: width, Slots: make([]TimelineSlot, n)}
	slot := func(sec float64) int { return min(n-1, max(0, int(sec/width))) }
	for _, b := range tl.spans {
		end := b.StartedAt.Add(time.Duration(b.DurationMS) * time.Millisecond)
		if end.Before(from) {
			continue
		}
		s0 := min(total, max(0, b.StartedAt.Sub(from).Seconds()))
		s1 := min(total, max(s0, end.Sub(from).Seconds()))
		last := slot(s1)
		out.Slots[last].Throttled += b.Requests.Throttled
		out.Slots[last].Retries += b.Requests.Retries
		if s1 == s0 {
			out.Slots[slot(s0)].Requests += float64(b.Requests.Total)
			continue
		}
		for i := slot(s0); i <= last; i++ {
			overlap := min(s1, float64(i+1)*width) - max(s0, float64(i)*width)
			out.Slots[i].Requests += float64(b.Requests.Total) * max(0, overlap) / (s1 - s0)
		}
	}
	for i := range out.Slots {
		out.Slots[i].Requests = math.Round(out.Slots[i].Requests*1000) / 1000
	}
	return out
}

// roundUp returns the least of 1, 2, 5, 10, 20, 50… seconds that is at least s.
func roundUp(s float64) float64 {
	for step := 1.0; ; step *= 10 {
		for _, f := range []float64{1, 2, 5} {
			if f*step >= s {
				return f * step
			}
		}
	}
}
