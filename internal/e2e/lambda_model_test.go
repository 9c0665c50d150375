package e2e

import (
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/run"
)

// TestLambdaModelDeliversExactly runs an export with the Map's children in
// simulated Lambda containers, half of them recycled after each
// invocation: the outcome is the same as in one process, and containers
// were both reused and started cold.
func TestLambdaModelDeliversExactly(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testLambdaModel)
}

func testLambdaModel(t *testing.T, d destination) {
	data := generate(t, sample.Options{Rows: 3000, Seed: 12, Invalid: 50, Dupes: 40})
	// At 10 requests/s the Map runs 20 children at once, fewer than the 30
	// batches: later children find containers earlier ones left warm.
	h := newHarness(t, d, simOptions{}, configYAML(d, "upsert", 10),
		func(o *local.Options) { o.Lambda = &local.LambdaModel{Seed: 3, Churn: 0.5} })
	rep := h.report(h.drop("a.csv", data)[0])
	if rep.Status != run.StatusSucceeded || !rep.Outcome.Reconciles() {
		t.Fatalf("run %s: %+v", rep.Status, rep.Outcome)
	}
	h.assertState(expected(t, data))
	st := h.p.Containers()
	if st.Invocations != rep.Batches.Total || st.ColdStarts <= 1 || st.ColdStarts >= st.Invocations {
		t.Fatalf("containers %+v for %d batches: want every batch invoked, some containers reused and some cold", st, rep.Batches.Total)
	}
}
