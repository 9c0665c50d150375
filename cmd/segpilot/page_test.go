package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/run"
)

// TestRunPrintsItsPage: the summary names the run's report.html, whose
// figures are the summary's; runs and report find it again.
func TestRunPrintsItsPage(t *testing.T) {
	t.Parallel()
	cfg, file, bucket := fixture(t, 400)
	code, out, stderr := segpilot(t, context.Background(), "run", "--config", cfg, "--export", "vip-newsletter",
		"--file", file, "--bucket-dir", bucket, "--sim")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	m := regexp.MustCompile(`(?m)^  page: +(\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the summary names no page:\n%s", out)
	}
	page, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	// The summary's figures, as the page writes them.
	sum := regexp.MustCompile(`sent (\d+) · rejected by Autopilot (\d+) · failed (\d+) · removed (\d+)`).FindStringSubmatch(out)
	rows := regexp.MustCompile(`rows (\d+) · added (\d+)`).FindStringSubmatch(out)
	if sum == nil || rows == nil {
		t.Fatalf("summary:\n%s", out)
	}
	for key, n := range map[string]string{"sent": sum[1], "rejected-by-Autopilot": sum[2], "failed": sum[3],
		"taken-off-the-list": sum[4], "rows": rows[1], "added": rows[2]} {
		if want := fmt.Sprintf(`data-figure="%s">%s<`, key, n); !strings.Contains(string(page), want) {
			t.Errorf("the page lacks %s (the summary's %s)", want, key)
		}
	}

	runID := regexp.MustCompile(`run (vip-newsletter-[0-9a-f]{16}): SUCCEEDED`).FindStringSubmatch(out)
	if runID == nil {
		t.Fatalf("no run id in:\n%s", out)
	}
	code, out, _ = segpilot(t, context.Background(), "runs", "--export", "vip-newsletter", "--bucket-dir", bucket)
	if code != 0 || !strings.Contains(out, "page:     "+m[1]) {
		t.Errorf("runs: exit %d, want the page %s:\n%s", code, m[1], out)
	}

	// report prints the path, and writes a page a report lacks (a run
	// from before pages).
	if err := os.Remove(m[1]); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = segpilot(t, context.Background(), "report", runID[1], "--bucket-dir", bucket, "--json")
	var doc map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc["page"] != m[1] || doc["status"] != run.StatusSucceeded {
		t.Fatalf("report --json: exit %d %s %s", code, out, stderr)
	}
	if _, err := os.Stat(m[1]); err != nil {
		t.Errorf("report did not write the missing page: %v", err)
	}
}

func TestReportUsage(t *testing.T) {
	t.Parallel()
	bucket := t.TempDir()
	tests := []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"report"}, exitUsage, "missing RUN-ID"},
		{[]string{"report", "../etc-0123456789abcdef"}, exitUsage, "is not a run id"},
		{[]string{"report", "vip-newsletter-0123456789abcdef", "--bucket-dir", bucket}, exitInvalid, "no run vip-newsletter-0123456789abcdef"},
	}
	for _, tt := range tests {
		code, _, stderr := segpilot(t, context.Background(), tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.inStderr) {
			t.Errorf("%v: exit %d %q, want %d and %q", tt.args, code, stderr, tt.code, tt.inStderr)
		}
	}
}

func TestLiftCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		bucket, config string
		sim            bool
		want           string
	}{
		{".segpilot/demo", "examples/exports.yaml", true,
			"segpilot run --config examples/exports.yaml --export vip --file .segpilot/demo/segments/vip/new.csv --bucket-dir .segpilot/demo --sim --allow-large-removal"},
		{"my bucket", "it's.yaml", false,
			`segpilot run --config 'it'\''s.yaml' --export vip --file 'my bucket/segments/vip/new.csv' --bucket-dir 'my bucket' --allow-large-removal`},
	}
	for _, tt := range tests {
		lift := liftCommand(tt.bucket, &config.Config{File: tt.config}, target{useSim: tt.sim})
		if got := lift("vip", run.Source{Key: "segments/vip/new.csv"}); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}
