package e2e

import (
	"encoding/csv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/autopilot/sim"
	"github.com/segpilot/segpilot/shared/run"
)

// TestSoak pushes profiles through the whole local pipeline against a
// simulator that fails, throttles, hangs (applying the request anyway),
// drops connections and rejects some emails; then a second run with 2%
// changed and 1% removed. Autopilot must end up holding exactly the segment,
// and every fault class must have been injected at least a stated number of
// times, so the soak cannot pass without meeting its faults.
// `make test` runs 5,000 profiles; `make soak` (SEGPILOT_SOAK=1) 100,000.
func TestSoak(t *testing.T) {
	t.Parallel()
	rows := 5000
	// About half of what seed 42 injects into each class (5,000 profiles:
	// 16 5xx, 10 burst 429s, 2 drops, 4 hangs, 64 rejections; 100,000: 232,
	// 265, 45, 43, 1303), so a change of request order cannot fail the soak
	// but losing a class does.
	minInjected := sim.Injected{ServerErrors: 8, Throttled: 5, Dropped: 1, Hung: 2, Rejected: 32}
	if os.Getenv("SEGPILOT_SOAK") != "" {
		rows = 100000
		minInjected = sim.Injected{ServerErrors: 116, Throttled: 130, Dropped: 22, Hung: 21, Rejected: 650}
	}
	faults := sim.Faults{
		ServerErrorRate:   0.05,
		ThrottleBurstRate: 0.01, ThrottleBurstLen: 5,
		HangRate: 0.01, HangFor: 3 * time.Second, // past the client's 2 s timeout, applied anyway
		DropRate:     0.01,
		RejectEmails: `^customer\d*999@`, // 0.1% of emails
	}
	h := newHarness(t, sim.Options{RequestsPerSecond: 100, Burst: 10, RetryAfter: true, Faults: faults, Seed: 42},
		configYAML("mirror", 100))
	start := time.Now()
	week1 := generate(t, sample.Options{Rows: rows, Seed: 8, Invalid: 500, Dupes: 300})
	rep1 := h.report(h.drop("week1.csv", week1)[0])
	holds := h.checkSoakRun(t, rep1, week1)
	h.assertHolds(holds)
	elapsed1 := time.Since(start)

	week2 := generate(t, sample.Options{Rows: rows, Seed: 8, Invalid: 500, Dupes: 300, Changed: 20, Removed: 10})
	rep2 := h.report(h.drop("week2.csv", week2)[0])
	h.checkSoakRun(t, rep2, week2)
	if rep2.Plan.Changed == 0 || rep2.Plan.Removed == 0 {
		t.Fatalf("week 2 plan %+v", rep2.Plan)
	}
	// Mirror mode takes leavers off the list, not out of Autopilot: the
	// contacts are still exactly those of week 1.
	h.assertHolds(holds)

	c := h.sim.Counters()
	t.Logf("injected: %d 5xx, %d burst 429s, %d drops, %d hangs, %d rejections",
		c.Injected.ServerErrors, c.Injected.Throttled, c.Injected.Dropped, c.Injected.Hung, c.Injected.Rejected)
	for _, f := range []struct {
		class     string
		got, want int
	}{
		{"5xx", c.Injected.ServerErrors, minInjected.ServerErrors},
		{"429burst", c.Injected.Throttled, minInjected.Throttled},
		{"drop", c.Injected.Dropped, minInjected.Dropped},
		{"hang", c.Injected.Hung, minInjected.Hung},
		{"reject", c.Injected.Rejected, minInjected.Rejected},
	} {
		if f.got < f.want {
			t.Errorf("fault %s was injected into %d requests, want at least %d: the soak did not exercise it", f.class, f.got, f.want)
		}
	}
	t.Logf("soak %d profiles: %d requests (%d retries in run 1, %d in run 2), 429 share %.2f%%, run 1 %.1fs vs floor %.1fs",
		rows, c.Total, rep1.Requests.Retries, rep2.Requests.Retries,
		100*float64(c.ByStatus[429])/float64(c.Total), elapsed1.Seconds(), rep1.FloorSeconds)
	h.assertNothingLeaked(t, week1)
}

// checkSoakRun checks a run's report and what Autopilot holds for its
// file, and returns the emails Autopilot must hold for it.
func (h *harness) checkSoakRun(t *testing.T, rep *run.Report, data []byte) map[string]contact {
	t.Helper()
	if rep.Status != run.StatusSucceeded || rep.Outcome.Failed != 0 || !rep.Outcome.Reconciles() {
		t.Fatalf("run %s: %s %s\n%+v", rep.RunID, rep.Status, rep.Message, rep.Outcome)
	}
	want := expected(t, data)
	rejected := h.rejectedByAPI(t, rep)
	for email := range want {
		if strings.HasSuffix(strings.Split(email, "@")[0], "999") {
			delete(want, email)
			if !rejected[email] {
				t.Errorf("%s was refused by Autopilot but is not in rejected.csv", email)
			}
		}
	}
	if len(rejected) != rep.Outcome.RejectedByAPI {
		t.Errorf("rejected.csv lists %d refused contacts, report says %d", len(rejected), rep.Outcome.RejectedByAPI)
	}
	h.assertState(want)
	return want
}

// assertHolds checks Autopilot holds exactly the contacts of want, none of
// them unsubscribed: nothing refused slipped in, nothing was lost.
func (h *harness) assertHolds(want map[string]contact) {
	h.t.Helper()
	state := h.sim.Dump()
	got := map[string]bool{}
	for _, c := range state.Contacts {
		email := strings.ToLower(c.Email)
		got[email] = true
		if _, ok := want[email]; !ok {
			h.t.Errorf("Autopilot holds %s, which it should not", email)
		}
		if c.Unsubscribed {
			h.t.Errorf("%s is unsubscribed", email)
		}
	}
	if len(got) != len(want) {
		h.t.Errorf("Autopilot holds %d contacts, want %d", len(got), len(want))
	}
}

// rejectedByAPI reads the contacts rejected.csv says Autopilot refused.
func (h *harness) rejectedByAPI(t *testing.T, rep *run.Report) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join(h.dir, rep.Rejected))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range rows[1:] {
		if strings.HasPrefix(r[2], "rejected by Autopilot") {
			out[r[1]] = true
		}
	}
	return out
}

// assertNothingLeaked: the API key appears in no log line and no file; raw
// emails appear only in the plan, result and snapshot files of the bucket.
func (h *harness) assertNothingLeaked(t *testing.T, data []byte) {
	t.Helper()
	logs := h.logs.String()
	if logs == "" {
		t.Fatal("no log lines captured: the check would prove nothing")
	}
	emails := []string{}
	for email := range expected(t, data) {
		emails = append(emails, email)
		if len(emails) == 200 {
			break
		}
	}
	if strings.Contains(logs, apiKey) {
		t.Error("the API key appears in the logs")
	}
	for _, e := range emails {
		if strings.Contains(logs, e) {
			t.Fatalf("a raw email (%s) appears in the logs", e)
		}
	}
	mayHoldEmails := func(key string) bool {
		base := filepath.Base(key)
		return base == "batches.jsonl" || strings.Contains(key, "/results/") || strings.Contains(key, "/failures/") || strings.Contains(key, "/progress/") ||
			base == "snapshot" || base == "rejected.csv" || base == "input-rejected.csv" || strings.HasPrefix(key, "segments/")
	}
	err := filepath.WalkDir(h.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		key, _ := filepath.Rel(h.dir, path)
		if strings.Contains(string(b), apiKey) {
			t.Errorf("the API key appears in %s", key)
		}
		if !mayHoldEmails(filepath.ToSlash(key)) {
			for _, e := range emails {
				if strings.Contains(string(b), e) {
					t.Errorf("a raw email appears in %s", key)
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
