package e2e

import (
	"bytes"
	"encoding/csv"
	"math"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/segment"
	"github.com/segpilot/segpilot/shared/simkit"
)

// TestReportCarriesItsPage: a finalized run's report.json holds what its
// page shows (budget, timeline, the first rejected rows, masked unless the
// export shows emails), bounded, and report.html lies next to it.
func TestReportCarriesItsPage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		showEmails bool
	}{
		{"emails masked by default", false},
		{"emails shown when the export opts in", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			config := configYAML(destinations[0], "upsert", 100)
			if tt.showEmails {
				config += "    showEmails: true\n"
			}
			h := newHarness(t, destinations[0], simOptions{Faults: simkit.Faults{RejectEmails: `^customer(7|77)@`}}, config)
			// Every 7th row broken: more rejected rows than the report keeps.
			data := generate(t, sample.Options{Rows: 1000, Seed: 9, Invalid: 7, Dupes: 50})
			rep := h.report(h.drop("a.csv", data)[0])
			if rep.Status != run.StatusSucceeded {
				t.Fatalf("status %s: %s", rep.Status, rep.Message)
			}

			csvRows, err := csv.NewReader(bytes.NewReader(mustRead(t, h.dir+"/"+rep.Rejected))).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if rep.RejectionsTotal != len(csvRows)-1 || len(rep.Rejections) != run.MaxRejections {
				t.Fatalf("rejectionsTotal %d, %d kept; rejected.csv has %d rows, want all counted and %d kept",
					rep.RejectionsTotal, len(rep.Rejections), len(csvRows)-1, run.MaxRejections)
			}
			for i, r := range rep.Rejections {
				want := strings.TrimPrefix(csvRows[i+1][1], "'") // as given, less rejected.csv's spreadsheet guard
				if !tt.showEmails {
					want = segment.MaskEmail(want)
				}
				if r.Email != want {
					t.Errorf("rejection %d: email %q, want %q", i, r.Email, want)
				}
			}
			if rep.EmailsShown != tt.showEmails || rep.RequestsPerSecond != 100 {
				t.Errorf("emailsShown %v, requestsPerSecond %v", rep.EmailsShown, rep.RequestsPerSecond)
			}

			tl := rep.Timeline
			if tl == nil || len(tl.Slots) == 0 || len(tl.Slots) > run.MaxTimelineSlots {
				t.Fatalf("timeline %+v", tl)
			}
			var sum float64
			for _, s := range tl.Slots {
				sum += s.Requests
			}
			// Every batch request is on the timeline; the two that found the
			// list before the batches (GET /lists, POST /list) are not.
			if batches := float64(rep.Requests.Total - 2); math.Abs(sum-batches) > 0.01 {
				t.Errorf("timeline holds %v requests, the batches made %v", sum, batches)
			}

			page := string(mustRead(t, h.dir+"/"+rep.Page))
			if rep.Page != "runs/vip-newsletter/"+rep.RunID+"/report.html" || !strings.HasPrefix(page, "<!DOCTYPE html>") {
				t.Errorf("page %s: %.80q", rep.Page, page)
			}
		})
	}
}

// TestHeldReportSaysHowToLift: a held run's report (and page) gives the
// brake's limit and the exact command that lifts it for one run.
func TestHeldReportSaysHowToLift(t *testing.T) {
	t.Parallel()
	h := newHarness(t, destinations[0], simOptions{}, configYAML(destinations[0], "mirror", 100))
	h.drop("a.csv", csvRange(1, 400, "gold"))
	rep := h.report(h.drop("b.csv", csvRange(201, 400, "gold"))[0])
	lift := "segpilot run --export vip-newsletter --allow-large-removal …" // local words: the CLI adds the exact flags
	if rep.Status != run.StatusHeld || rep.Brake == nil || rep.Brake.MaxRemovalShare != 0.2 || rep.Brake.Command != lift ||
		rep.Plan.Removed != 200 || rep.Plan.Previous != 400 {
		t.Fatalf("held report: %s %+v %+v", rep.Status, rep.Brake, rep.Plan)
	}
	if page := string(mustRead(t, h.dir+"/"+rep.Page)); !strings.Contains(page, "--allow-large-removal") {
		t.Errorf("the held run's page does not show the command")
	}
}
