package e2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/run"
)

// TestInvalidFileSendsNothing: a file that fails validation partway (a
// JSON Lines syntax error after 300 good rows) sends nothing at all — not
// the rows before the error — and its report says where and what.
// (Seen failing with the planner going on after the reader's error: 300
// contacts sent.)
func TestInvalidFileSendsNothing(t *testing.T) {
	t.Parallel()
	forEachDestination(t, testInvalidFileSendsNothing)
}

func testInvalidFileSendsNothing(t *testing.T, d destination) {
	h := newHarness(t, d, simOptions{}, configYAML(d, "mirror", 100))
	var b bytes.Buffer
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&b, `{"EmailAddress": %q, "FirstName": "F%d", "LoyaltyTier": "gold", "LifetimeOrders": %d}`+"\n", sample.Email(i), i, i)
	}
	b.WriteString(`{"EmailAddress": "broken@example.com", "FirstName": "F"` + "\n") // never closed
	res := h.drop("week1.jsonl", b.Bytes())
	if len(res) != 1 || res[0].Status != run.StatusInvalid {
		t.Fatalf("results %+v, want one invalid", res)
	}
	rep := h.report(res[0])
	if rep.Status != run.StatusInvalid || !strings.Contains(rep.Message, "week1.jsonl") || !strings.Contains(rep.Message, "301") {
		t.Fatalf("report: %s %q; want invalid, naming the file and line 301", rep.Status, rep.Message)
	}
	if c := h.sim.Counters(); c.Total != 0 {
		t.Fatalf("the simulator got %d requests, want none: %v", c.Total, c.ByRoute)
	}
}
