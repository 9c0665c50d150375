package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runner"
)

var update = flag.Bool("update", false, "rewrite testdata/summary.txt")

// wrongPlural is a count whose noun disagrees with it ("1 rows", "1
// batches"), a duration that reads as 0s, or a floor of 0s.
var wrongPlural = regexp.MustCompile(`(^|[^\d.,/])1 (slots|duplicates|retries|requests|rows|removals|contacts|profiles|batches|connections|exports|attempts)\b` +
	`|took 0s|floor 0s`)

// TestSummaryOfSmallRuns: the summary run prints, and the lines of
// segpilot runs, for the run page's reports of 0, 1 and many
// (shared/runpage/testdata: zero, one, succeeded), against
// testdata/summary.txt (go test ./cmd/segpilot -update rewrites it).
func TestSummaryOfSmallRuns(t *testing.T) {
	t.Parallel()
	var reps []*run.Report
	var b bytes.Buffer
	for _, name := range []string{"zero", "one", "succeeded"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "shared", "runpage", "testdata", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var rep run.Report
		if err := json.Unmarshal(raw, &rep); err != nil {
			t.Fatal(err)
		}
		reps = append(reps, &rep)
		printSummary(&b, "bucket", run.Result{Export: rep.Export, RunID: rep.RunID, Status: rep.Status, Message: rep.Message}, &rep)
	}
	b.WriteString("\n")
	printRuns(&b, "bucket", reps)
	got := b.String()
	for _, m := range wrongPlural.FindAllString(got, -1) {
		t.Errorf("the summary says %q", m)
	}
	golden := filepath.Join("testdata", "summary.txt")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading %s (go test ./cmd/segpilot -update writes it): %v", golden, err)
	}
	if got != string(want) {
		t.Errorf("the summary differs from %s (go test ./cmd/segpilot -update rewrites it after a deliberate change):\n%s", golden, got)
	}
}

// TestValidateAndPlanOfSmallFiles: the counts validate and plan print
// agree with their nouns at 1.
func TestValidateAndPlanOfSmallFiles(t *testing.T) {
	t.Parallel()
	config, _, _ := fixture(t, 1)
	file := filepath.Join(t.TempDir(), "dup.csv")
	row := "a@example.com,Ann,Lee,gold,1\n"
	if err := os.WriteFile(file, []byte("EmailAddress,FirstName,LastName,LoyaltyTier,LifetimeOrders\n"+row+row), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"validate", "--config", config},
		{"validate", "--config", config, "--export", "vip-newsletter", "--file", file},
		{"plan", "--config", config, "--export", "vip-newsletter", "--file", file, "--out", filepath.Join(t.TempDir(), "p")},
	} {
		code, out, stderr := segpilot(t, context.Background(), args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		for _, m := range wrongPlural.FindAllString(out, -1) {
			t.Errorf("%v says %q:\n%s", args, m, out)
		}
	}
}

// TestProgressOfAQuickRun: a run done at its first look shows no rate
// (no time has passed to measure one) and no ETA.
func TestProgressOfAQuickRun(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	p := newProgress(&b)
	p.update(runner.Progress{Done: 1, Total: 2})
	p.start = p.start.Add(-2 * time.Second) // as if the first batch took two seconds
	p.update(runner.Progress{Done: 2, Total: 2})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || lines[0] != "batches 1/2" || !strings.HasPrefix(lines[1], "batches 2/2 · ≤100 contacts/s") || strings.Contains(lines[1], "ETA") {
		t.Errorf("progress lines:\n%s", b.String())
	}
}
