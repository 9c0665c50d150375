package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/testutil"
)

// bucketWithRun is a bucket folder holding one run's report.json (the run
// page's zero.json), without its page.
func bucketWithRun(t *testing.T) (bucket, runID string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "shared", "runpage", "testdata", "zero.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct{ Export, RunID string }
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	bucket = t.TempDir()
	dir := filepath.Join(bucket, "runs", rep.Export, rep.RunID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return bucket, rep.RunID
}

// TestFlagsBeforeAndAfterArguments: report takes its run id before its
// flags, after them, or between them.
func TestFlagsBeforeAndAfterArguments(t *testing.T) {
	t.Parallel()
	bucket, runID := bucketWithRun(t)
	for _, args := range [][]string{
		{"report", runID, "--bucket-dir", bucket},
		{"report", "--bucket-dir", bucket, runID},
		{"report", "--json", runID, "--bucket-dir", bucket},
		{"report", "--bucket-dir", bucket, "--", runID},
	} {
		code, out, stderr := segpilot(t, context.Background(), args...)
		if code != exitOK || !strings.Contains(out, "report.html") {
			t.Errorf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out, stderr)
		}
	}
	for _, args := range [][]string{
		{"report", runID, "--bucket-dir", bucket, "extra"},
		{"runs", "--export", "x", "--bucket-dir", bucket, "stray"},
	} {
		if code, _, stderr := segpilot(t, context.Background(), args...); code != exitUsage || !strings.Contains(stderr, "unexpected argument") {
			t.Errorf("%v: exit %d, want %d with unexpected argument: %s", args, code, exitUsage, stderr)
		}
	}
}

// TestHelpNamesEveryDestination: a help text that names Autopilot names
// Ortto too; segpilot sends to both.
func TestHelpNamesEveryDestination(t *testing.T) {
	t.Parallel()
	args := [][]string{{"help"}}
	for name := range commands() {
		args = append(args, []string{name, "--help"})
	}
	for _, a := range args {
		_, out, _ := segpilot(t, context.Background(), a...)
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "Autopilot") && !strings.Contains(line, "Ortto") && !strings.Contains(line, "--kind autopilot") {
				t.Errorf("segpilot %s: %q names Autopilot alone", strings.Join(a, " "), strings.TrimSpace(line))
			}
		}
	}
}

// TestJSONErrorsGoToStdoutOnly: with --json, a failing command's one
// answer is the JSON document on stdout; stderr says nothing.
func TestJSONErrorsGoToStdoutOnly(t *testing.T) {
	t.Parallel()
	config, file, bucket := fixture(t, 20)
	for _, args := range [][]string{
		{"validate", "--json", "--config", config, "--export", "vip-newsletter", "--file", config},
		{"validate", "--json", "--config", config, "--export", "nope", "--file", file},
		{"run", "--json", "--config", config, "--export", "vip-newsletter"},
		{"report", "--json", "vip-newsletter-0123456789abcdef", "--bucket-dir", bucket},
	} {
		code, out, stderr := segpilot(t, context.Background(), args...)
		var doc any
		if code == exitOK || json.Unmarshal([]byte(out), &doc) != nil || stderr != "" {
			t.Errorf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out, stderr)
		}
	}
}

// TestMistypedFlagIsNamed: a flag the command does not have is named,
// with the closest it has, in a short message: not the whole help.
func TestMistypedFlagIsNamed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "-confg", "x.yaml"}, "did you mean -config?"},
		{[]string{"run", "--bucket-dri", "b"}, "did you mean -bucket-dir?"},
		{[]string{"report", "--opne"}, "did you mean -open?"},
		{[]string{"runs", "--xyzzy"}, "-xyzzy"},
		{[]string{"plan", "--config"}, "flag needs an argument: -config"},
	}
	for _, tt := range tests {
		code, out, stderr := segpilot(t, context.Background(), tt.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != exitUsage || out != "" || !strings.Contains(stderr, tt.want) || len(lines) > 2 ||
			!strings.Contains(stderr, "segpilot "+tt.args[0]+" --help") {
			t.Errorf("%v: exit %d, want %d; want %q and a line of usage on stderr, nothing on stdout\nstdout: %s\nstderr: %s",
				tt.args, code, exitUsage, tt.want, out, stderr)
		}
	}
}

// TestMistypedNameIsNamed: sim --kind and demo --dest suggest the kind
// meant, and an unknown command the command.
func TestMistypedNameIsNamed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"sim", "--kind", "orto", "--api-key", "k"}, "did you mean ortto?"},
		{[]string{"sim", "--kind", "Autopilot", "--api-key", "k"}, "did you mean autopilot?"},
		{[]string{"demo", "--dest", "orrto"}, "did you mean ortto?"},
		{[]string{"rnu"}, "did you mean run?"},
	}
	for _, tt := range tests {
		if code, _, stderr := segpilot(t, context.Background(), tt.args...); code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, want %d with %q: %s", tt.args, code, exitUsage, tt.want, stderr)
		}
	}
}

// TestVerboseLogsEachOutcomeOnce: -v logs a run's outcome once (the
// drain, finalize and the waiting CLI each logged it, three times).
func TestVerboseLogsEachOutcomeOnce(t *testing.T) {
	t.Parallel()
	config, file, bucket := fixture(t, 150)
	code, _, stderr := segpilot(t, context.Background(), "run", "-v", "--config", config, "--export", "vip-newsletter",
		"--file", file, "--bucket-dir", bucket, "--sim")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if n := len(regexp.MustCompile(`(?m)^time=.* status=succeeded`).FindAllString(stderr, -1)); n != 1 {
		t.Errorf("%d log lines of the outcome, want 1:\n%s", n, stderr)
	}
}

// TestReadingCommandsCreateNothing: runs and report, given a bucket
// folder that is not there or empty, leave it so.
func TestReadingCommandsCreateNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing, empty := filepath.Join(dir, "missing"), filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"runs", "--export", "vip-newsletter", "--bucket-dir", missing},
		{"runs", "--export", "vip-newsletter", "--bucket-dir", empty},
		{"runs", "--json", "--export", "vip-newsletter", "--bucket-dir", missing},
		{"report", "vip-newsletter-0123456789abcdef", "--bucket-dir", missing},
		{"report", "vip-newsletter-0123456789abcdef", "--bucket-dir", empty},
	} {
		code, out, stderr := segpilot(t, context.Background(), args...)
		want := exitOK
		if args[0] == "report" {
			want = exitInvalid // no such run
		}
		if code != want {
			t.Errorf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, stderr)
		}
	}
	var made []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dir && p != empty {
			made = append(made, p)
		}
		return err
	})
	if len(made) > 0 {
		t.Errorf("reading commands created %v", made)
	}
}

// TestVersionNamesItsCommit builds segpilot as make build does (its
// command, from make -n, with another output) and checks that version
// names the commit built, though the build has no VCS stamp of Go's; the
// Lambda bootstraps are stamped alike. Built any other way (go run, go
// test), version says it does not know the commit.
func TestVersionNamesItsCommit(t *testing.T) {
	t.Parallel()
	_, out, _ := segpilot(t, context.Background(), "version")
	if !strings.Contains(out, "commit unknown") {
		t.Errorf("an unstamped build's version: %q, want it to say the commit is unknown", out)
	}

	testutil.NeedTool(t, "make", "apt-get install -y make")
	testutil.NeedTool(t, "git", "apt-get install -y git")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	gitOut, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	commit := strings.TrimSpace(string(gitOut))
	plan, err := exec.Command("make", "-s", "-n", "-C", root, "build").Output()
	if err != nil {
		t.Fatalf("make -n build: %v", err)
	}
	stamp := regexp.MustCompile(`-X \S+/buildinfo\.commit=\S+`)
	var cli string
	builds := 0
	for _, line := range strings.Split(string(plan), "\n") {
		if !strings.Contains(line, " build ") {
			continue
		}
		builds++
		if !stamp.MatchString(line) {
			t.Errorf("make build runs a build without the commit's stamp:\n%s", line)
		}
		if strings.HasSuffix(line, "./cmd/segpilot") {
			cli = line
		}
	}
	if builds != 5 || cli == "" {
		t.Fatalf("make build runs %d builds, want the CLI's and four bootstraps':\n%s", builds, plan)
	}
	bin := filepath.Join(t.TempDir(), "segpilot")
	cmd := exec.Command("sh", "-c", regexp.MustCompile(`-o \S+`).ReplaceAllLiteralString(cli, "-o "+bin))
	cmd.Dir, cmd.Env = root, append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cli, err, b)
	}
	got, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(got), "commit "+commit) {
		t.Errorf("segpilot version, built by make: %q (%v), want commit %s", got, err, commit)
	}
}

// TestUnknownExportNamesTheConfigOnce: the config's error already names
// its file; the CLI does not name it again.
func TestUnknownExportNamesTheConfigOnce(t *testing.T) {
	t.Parallel()
	config, file, _ := fixture(t, 20)
	for _, cmd := range []string{"validate", "plan", "run"} {
		_, _, stderr := segpilot(t, context.Background(), cmd, "--config", config, "--export", "nope", "--file", file)
		if n := strings.Count(stderr, config); n != 1 || !strings.Contains(stderr, `"nope"`) {
			t.Errorf("%s: the config named %d times, want once: %s", cmd, n, stderr)
		}
	}
}
