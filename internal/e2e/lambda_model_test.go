package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/pace"
	"github.com/segpilot/segpilot/shared/run"
)

// TestLambdaModelDeliversExactly runs two exports with the Map's children
// in simulated Lambda containers, half of them recycled after each
// invocation: the outcomes are those of one process, a run's first
// children start cold, and the next run finds some containers warm.
func TestLambdaModelDeliversExactly(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testLambdaModel)
}

func testLambdaModel(t *testing.T, d destination) {
	week1 := generate(t, sample.Options{Rows: 3000, Seed: 12, Invalid: 50, Dupes: 40})
	week2Opts := sample.Options{Rows: 3000, Seed: 12, Invalid: 50, Dupes: 40, Changed: 300, Added: 200}
	week2 := generate(t, week2Opts)
	h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 10),
		func(o *local.Options) { o.Lambda = &local.LambdaModel{Seed: 3, Churn: 0.5} })

	rep := h.report(h.drop("week1.csv", week1)[0])
	if rep.Status != run.StatusSucceeded || !rep.Outcome.Reconciles() {
		t.Fatalf("first run %s: %+v", rep.Status, rep.Outcome)
	}
	first := h.p.Containers()
	concurrency, _ := run.Pacing(10)
	if first.Invocations <= concurrency || first.ColdStarts < concurrency || first.ColdStarts > first.Invocations {
		t.Fatalf("first run's containers %+v: want each of the %d workers' first child in a cold container, and more children than workers (groups shrinking to the run's end)", first, concurrency)
	}

	rep = h.report(h.drop("week2.csv", week2)[0])
	if rep.Status != run.StatusSucceeded || !rep.Outcome.Reconciles() {
		t.Fatalf("second run %s: %+v", rep.Status, rep.Outcome)
	}
	h.assertState(expected(t, week2))
	both := h.p.Containers()
	if both.Invocations <= first.Invocations || both.ColdStarts >= both.Invocations {
		t.Fatalf("containers after two runs %+v (after the first %+v): want the second run's children partly in warm containers", both, first)
	}
}

// TestLambdaSharesRaiseTheRunsThrottleSignal: Map children in separate
// containers, sending faster together than the simulator takes, tell each
// other of their 429s through the run's throttle object (pace.NewShare
// follows it), and the run still delivers exactly. The object counts
// every group finished, once (the last shares take the finished ones'
// budget). (Seen failing without the signal in syncbatch's context: no
// object.)
func TestLambdaSharesRaiseTheRunsThrottleSignal(t *testing.T) {
	t.Parallel()
	forEachDestination(t, func(t *testing.T, d destination) {
		rows := generate(t, sample.Options{Rows: 3000, Seed: 13})
		// 30 batches, 30 children at a 40th of 20 requests/s each, their
		// first requests within 2 s: the simulator takes 5/s.
		h := newHarness(t, d, simOptions{RequestsPerSecond: 5, Burst: 1}, configYAML(d, "upsert", 20),
			func(o *local.Options) { o.Lambda = &local.LambdaModel{Seed: 4} })
		res := h.drop("week1.csv", rows)[0]
		rep := h.report(res)
		if rep.Status != run.StatusSucceeded || !rep.Outcome.Reconciles() || rep.Outcome.Sent != 3000 {
			t.Fatalf("run %s: %+v", rep.Status, rep.Outcome)
		}
		if n := h.sim.Counters().ByStatus[429]; n == 0 {
			t.Fatal("the simulator answered no 429: the test sends too slowly to test anything")
		}
		var st pace.ShareState
		readJSONFile(t, filepath.Join(h.dir, "runs", "vip-newsletter", res.RunID, "attempts", fmt.Sprint(res.Attempt), "throttled"), &st)
		if st.Refused == 0 && st.Rate == 0 {
			t.Fatalf("the run's throttle signal %+v: no 429 counted, no cut", st)
		}
		items, err := filepath.Glob(filepath.Join(h.dir, "runs", "vip-newsletter", res.RunID, "plans", "*", "items.json"))
		if err != nil || len(items) != 1 {
			t.Fatalf("the run's items.json: %v %v", items, err)
		}
		var groups []run.Item
		readJSONFile(t, items[0], &groups)
		if st.Done != len(groups) {
			t.Fatalf("the throttle signal counts %d groups finished; want the Map's %d", st.Done, len(groups))
		}
	})
}

// readJSONFile decodes the JSON file at path into v.
func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
