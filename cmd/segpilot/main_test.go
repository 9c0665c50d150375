package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/internal/testutil"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

func noEnv(string) string { return "" }

func segpilot(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut testutil.SyncBuffer
	code := Main(ctx, args, &out, &errOut, noEnv)
	return code, out.String(), errOut.String()
}

// fixture writes the shipped example config (at a test-friendly budget)
// and a generated segment file.
func fixture(t *testing.T, rows int) (config, file, dir string) {
	t.Helper()
	return fixtureAt(t, rows, 100)
}

// fixtureAt is fixture with a budget of rps requests per second.
func fixtureAt(t *testing.T, rows, rps int) (config, file, dir string) {
	t.Helper()
	dir = t.TempDir()
	cfg := testutil.ExampleConfig(t, "autopilot") // these tests meet the Autopilot simulator only
	config = filepath.Join(dir, "exports.yaml")
	if err := os.WriteFile(config, bytes.Replace(cfg, []byte("requestsPerSecond: 5 "), []byte("requestsPerSecond: "+strconv.Itoa(rps)+" "), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, "vip.csv")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sample.Write(f, sample.Options{Rows: rows, Seed: 5, Invalid: 40, Dupes: 30}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return config, file, filepath.Join(dir, "bucket")
}

func TestRunAgainstSimulator(t *testing.T) {
	t.Parallel()
	config, file, bucket := fixture(t, 400)
	args := []string{"run", "--config", config, "--export", "vip-newsletter", "--file", file, "--bucket-dir", bucket, "--sim", "--json"}
	code, out, stderr := segpilot(t, context.Background(), args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res []struct {
		Result run.Result  `json:"result"`
		Report *run.Report `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	rep := res[0].Report
	if res[0].Result.Status != run.StatusSucceeded || rep == nil || !rep.Outcome.Reconciles() ||
		rep.Outcome.Sent != rep.Plan.Unique || rep.Outcome.Rejected == 0 || rep.Outcome.Duplicates == 0 {
		t.Fatalf("first run: %+v %+v", res[0].Result, rep)
	}

	// The same file again: nothing to send.
	code, out, stderr = segpilot(t, context.Background(), args...)
	if code != 0 || !strings.Contains(out, `"up-to-date"`) {
		t.Fatalf("second run exit %d: %s %s", code, out, stderr)
	}

	code, out, _ = segpilot(t, context.Background(), "runs", "--export", "vip-newsletter", "--bucket-dir", bucket)
	if code != 0 || !strings.Contains(out, "succeeded") || !strings.Contains(out, "manual") {
		t.Fatalf("runs: exit %d\n%s", code, out)
	}
}

// watching starts `segpilot watch --sim --interval 20ms` (and more) on
// bucket with config, and returns once it says it is watching: its
// output, and stop, which ends it and checks it exits 0.
func watching(t *testing.T, config, bucket string, more ...string) (out *testutil.SyncBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = new(testutil.SyncBuffer)
	var errOut testutil.SyncBuffer
	done := make(chan int, 1)
	go func() {
		args := append([]string{"watch", "--config", config, "--dir", bucket, "--sim", "--interval", "20ms"}, more...)
		done <- Main(ctx, args, out, &errOut, noEnv)
	}()
	waitFor(t, func() bool { return strings.Contains(out.String(), "watching") })
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("watch exit %d: %s", code, errOut.String())
		}
	}
	t.Cleanup(stop)
	return out, stop
}

func TestWatchRunsDroppedFiles(t *testing.T) {
	t.Parallel()
	config, file, bucket := fixture(t, 150)
	_, stop := watching(t, config, bucket)

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(bucket, "segments", "vip-customers", "drop.csv")
	if err := os.MkdirAll(filepath.Dir(drop), 0o755); err != nil {
		t.Fatal(err)
	}
	dropFile(t, drop, data)
	st, err := store.NewFolder(bucket)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		reps, err := run.ListReports(context.Background(), st, "vip-newsletter")
		return err == nil && len(reps) == 1 && reps[0].Status == run.StatusSucceeded &&
			reps[0].Trigger == run.TriggerS3 && reps[0].Source.Key == "segments/vip-customers/drop.csv"
	})
	stop()
}

// TestWatchWaitsForAnEmptyFilesBytes: a writer that creates its file
// before writing (a shell's > redirect) leaves it empty at looks that see
// it unchanged; it runs once it has bytes, and an empty file left empty
// runs after --empty-wait, to say it is not a segment.
func TestWatchWaitsForAnEmptyFilesBytes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		emptyWait string
		fill      bool
		want      []string
	}{
		{"filled after a while", "1m", true, []string{run.StatusSucceeded}},
		{"left empty", "100ms", false, []string{run.StatusInvalid}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			config, file, bucket := fixture(t, 150)
			_, stop := watching(t, config, bucket, "--empty-wait", tt.emptyWait)
			drop := filepath.Join(bucket, "segments", "vip-customers", "drop.csv")
			if err := os.MkdirAll(filepath.Dir(drop), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(drop, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			st, err := store.NewFolder(bucket)
			if err != nil {
				t.Fatal(err)
			}
			statuses := func() []string {
				reps, err := run.ListReports(context.Background(), st, "vip-newsletter")
				if err != nil {
					return nil
				}
				var got []string
				for _, r := range reps {
					got = append(got, r.Status)
				}
				return got
			}
			if tt.fill {
				time.Sleep(300 * time.Millisecond) // fifteen looks at the empty file
				if got := statuses(); len(got) != 0 {
					t.Fatalf("the empty file ran: %v", got)
				}
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(drop, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, func() bool { return len(statuses()) == len(tt.want) })
			time.Sleep(100 * time.Millisecond) // looks after it: no second run
			if got := statuses(); !slices.Equal(got, tt.want) {
				t.Fatalf("runs %v, want %v", got, tt.want)
			}
			stop()
		})
	}
}

func TestExitCodesAndHelp(t *testing.T) {
	t.Parallel()
	config, file, _ := fixture(t, 20)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("exports:\n  x:\n    connection: nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"run", "--config", config}, 2, "missing --export, --file"},
		{[]string{"validate", "--config", bad}, 1, "bad.yaml"},
		{[]string{"validate", "--config", config, "--export", "vip-newsletter", "--file", file}, 0, "valid csv file"},
		{[]string{"validate", "--config", config, "--export", "vip-newsletter", "--file", config}, 1, "EmailAddress"},
		{[]string{"plan", "--config", config, "--export", "vip-newsletter", "--file", file, "--out", filepath.Join(t.TempDir(), "p")}, 0, "to add"},
		{[]string{"help"}, 0, "Commands:"},
	}
	for name := range commands() {
		tests = append(tests, struct {
			args     []string
			code     int
			contains string
		}{[]string{name, "--help"}, 0, "Example:"})
	}
	for _, tt := range tests {
		code, out, stderr := segpilot(t, context.Background(), tt.args...)
		if code != tt.code || !strings.Contains(out+stderr, tt.contains) {
			t.Errorf("segpilot %v: exit %d, want %d with %q\nstdout: %s\nstderr: %s", tt.args, code, tt.code, tt.contains, out, stderr)
		}
	}
}

// dropFile puts a file in a watched folder whole, as an S3 PUT lands: written
// beside and renamed in. os.WriteFile creates the file empty before it
// writes, and under -race with the suite running the watcher saw it empty
// at two looks 20 ms apart, ran it, then ran the written file again.
func dropFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestValidateReportsWhatStopsARun checks that validate fails for every
// reason plan and run would refuse the export, and that --json carries the
// row reasons, bounded, under lower-camel-case keys.
func TestValidateReportsWhatStopsARun(t *testing.T) {
	t.Parallel()
	config, file, _ := fixture(t, 300)
	raw, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(old, new string) string {
		if !bytes.Contains(raw, []byte(old)) {
			t.Fatalf("example config lacks %q", old)
		}
		p := filepath.Join(t.TempDir(), "exports.yaml")
		if err := os.WriteFile(p, bytes.Replace(raw, []byte(old), []byte(new), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, config string
		code         int
		contains     string
	}{
		{"valid", config, 0, "valid for export vip-newsletter"},
		{"over maxProfiles", variant("maxProfiles: 100000", "maxProfiles: 5"), 1, "above maxProfiles 5"},
		{"no consent", variant("consent: true", "consent: false"), 1, "has no consent"},
		{"disabled", variant("enabled: true", "enabled: false"), 1, "it is disabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"validate", "--config", tc.config, "--export", "vip-newsletter", "--file", file}
			code, out, stderr := segpilot(t, context.Background(), args...)
			if code != tc.code || !strings.Contains(out+stderr, tc.contains) {
				t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tc.code, tc.contains, out, stderr)
			}
			code, out, _ = segpilot(t, context.Background(), append(args, "--json")...)
			var got struct {
				Valid    bool     `json:"valid"`
				Problems []string `json:"problems"`
				Stats    struct {
					Rows   int    `json:"rows"`
					Format string `json:"format"`
				} `json:"stats"`
				Counts struct {
					Rows, Valid, Rejected, Duplicates, Unique int
				} `json:"counts"`
				Rejections []struct {
					Row    int    `json:"row"`
					Reason string `json:"reason"`
				} `json:"rejections"`
				RejectionsTotal int `json:"rejectionsTotal"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("--json output: %v\n%s", err, out)
			}
			for _, key := range []string{`"rows"`, `"unique"`, `"duplicates"`, `"rejectionsTotal"`} {
				if !strings.Contains(out, key) {
					t.Errorf("--json output lacks %s:\n%s", key, out)
				}
			}
			if strings.Contains(out, `"Rows"`) {
				t.Errorf("--json output has a Go field name:\n%s", out)
			}
			c := got.Counts
			if code != tc.code || got.Valid != (tc.code == 0) || (len(got.Problems) == 0) != got.Valid ||
				got.Stats.Rows != c.Rows || got.Stats.Format != "csv" || c.Rows != c.Valid+c.Rejected ||
				c.Valid != c.Unique+c.Duplicates || c.Duplicates == 0 || c.Rejected == 0 ||
				got.RejectionsTotal != c.Rejected+c.Duplicates || len(got.Rejections) != min(got.RejectionsTotal, 100) ||
				got.Rejections[0].Row == 0 || got.Rejections[0].Reason == "" {
				t.Errorf("--json: exit %d, %+v", code, got)
			}
			if addr := regexp.MustCompile(`[\w.+-]+@[\w-]+\.[\w.-]+`).FindString(out); addr != "" {
				t.Errorf("--json output shows an email, %q:\n%s", addr, out)
			}
		})
	}
}

// TestBaseURLFromEnvironmentIsChecked: AUTOPILOT_BASE_URL over plain http
// to a host other than loopback stops the run before anything is sent.
func TestBaseURLFromEnvironmentIsChecked(t *testing.T) {
	t.Parallel()
	config, file, bucket := fixture(t, 20)
	env := map[string]string{"AUTOPILOT_API_KEY": "KEY-0123", "AUTOPILOT_BASE_URL": "http://192.0.2.1/v1"}
	var out, errOut testutil.SyncBuffer
	code := Main(context.Background(), []string{"run", "--config", config, "--export", "vip-newsletter", "--file", file, "--bucket-dir", bucket},
		&out, &errOut, func(k string) string { return env[k] })
	if code != exitInvalid || !strings.Contains(errOut.String(), "AUTOPILOT_BASE_URL") || !strings.Contains(errOut.String(), "https://") {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "KEY-0123") {
		t.Fatal("the key was printed")
	}
}
