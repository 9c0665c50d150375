package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot"
	"github.com/segpilot/segpilot/internal/sample"
	"github.com/segpilot/segpilot/shared/config"
	"github.com/segpilot/segpilot/shared/dest"
	"github.com/segpilot/segpilot/shared/local"
	"github.com/segpilot/segpilot/shared/plan"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/runner"
	"github.com/segpilot/segpilot/statemachine"
)

// rejectingDestination accepts every contact but the first of each batch,
// which it refuses with a reason as long as Autopilot's: every batch has
// rejected rows to report, the heaviest result a batch can have.
type rejectingDestination struct{ calls *atomic.Int64 }

func (rejectingDestination) PrepareList(context.Context, dest.ListSpec) (string, error) {
	return "contactlist_limits", nil
}

func (d rejectingDestination) Upsert(_ context.Context, _ string, cs []dest.Contact, _ dest.Write) ([]dest.Outcome, error) {
	d.calls.Add(1)
	out := make([]dest.Outcome, len(cs))
	for i := range cs {
		out[i] = dest.Outcome{Status: dest.Sent}
	}
	out[0] = dest.Outcome{Status: dest.Rejected,
		Reason: "400 Bad Request: " + strings.Repeat("the contact's email address was refused by the destination; ", 3)}
	return out, nil
}

func (rejectingDestination) Remove(context.Context, string, []string) ([]dest.Outcome, error) {
	return nil, nil
}
func (rejectingDestination) Stats() dest.Stats { return dest.Stats{Requests: 1} }

// TestLargeRunStaysUnderStepFunctionsLimits plans 300,000 profiles and runs
// them through the runner, which holds every state input, output and result
// to Step Functions' 256 KiB quota and fails (uncatchably, as the cloud
// does) past it. 3,000 batches each reporting rejected rows: without a
// ResultWriter the Map's result, the array of every child's output, is
// megabytes. (Seen failing so before the ResultWriter was added.)
func TestLargeRunStaysUnderStepFunctionsLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("plans and runs 300,000 profiles")
	}
	t.Parallel()
	const profiles = 300_000
	p, err := local.New(local.Options{BucketDir: t.TempDir(), Secrets: fixedKey(apiKey), RetrySleep: noWait,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	calls := &atomic.Int64{}
	p.Service.Connect = func(context.Context, config.Connection, run.Share) (run.Destination, error) {
		return rejectingDestination{calls: calls}, nil
	}
	h := &harness{t: t, p: p}
	h.put(run.ConfigKey, []byte(configYAML(destinations[0], "upsert", 100)+"    maxProfiles: 300000\n"))
	res := h.drop("big.csv", generate(t, sample.Options{Rows: profiles, Seed: 3}))
	if len(res) != 1 {
		t.Fatalf("results %+v", res)
	}
	rep := h.report(res[0])
	const batches = profiles / 100
	if rep.Status != run.StatusSucceeded || rep.Batches.Total != batches || rep.Outcome.RejectedByAPI != batches ||
		rep.Outcome.Sent != profiles-batches || !rep.Outcome.Reconciles() {
		t.Fatalf("run %s: %s (%s), %d batches, %d sent, %d rejected by the API; want succeeded, %d batches each with one rejection",
			res[0].RunID, rep.Status, rep.Message, rep.Batches.Total, rep.Outcome.Sent, rep.Outcome.RejectedByAPI, batches)
	}
	if calls.Load() != batches {
		t.Fatalf("%d upserts, want %d", calls.Load(), batches)
	}
	largest := p.Runner.LargestPayload()
	t.Logf("largest state input/output/result of the run: %d bytes (%.1f%% of the quota)", largest, 100*float64(largest)/runner.PayloadQuota)
	if largest > runner.PayloadQuota/4 {
		t.Errorf("the largest payload, %d bytes, is within 4x of the %d-byte quota: a larger run or longer reasons could cross it",
			largest, runner.PayloadQuota)
	}
}

// TestMillionProfileGroupsStayUnderStepFunctionsLimits runs the Map of a
// 1,000,000-profile run (10,000 batches) at the largest budget, 100
// requests/s, whose groups are the largest, through the runner's 256 KiB
// checks: the execution input and every group of items (each a child's
// input) must stay far under the quota. Items carry the widest numbers a
// plan of that size writes (batches of a megabyte, offsets of ten digits).
func TestMillionProfileGroupsStayUnderStepFunctionsLimits(t *testing.T) {
	t.Parallel()
	const batches = 10_000
	refs := make([]plan.BatchRef, batches)
	for i := range refs {
		refs[i] = plan.BatchRef{Seq: i + 1, Offset: int64(i) * 1_000_000, Length: 999_999, Upserts: 100, CRC32C: "yZRlqg=="}
	}
	concurrency, workerRPS := run.Pacing(100)
	var items []any
	for _, it := range run.MapItems(refs, concurrency, workerRPS) {
		items = append(items, it)
	}
	export := strings.Repeat("e", 64)
	runID := run.RunID(export, run.Source{Key: "segments/s/f.csv", ETag: "x"}, "v")
	input, err := json.Marshal(run.Execution{Export: export, RunID: runID, ItemsKey: "runs/" + export + "/" + runID + "/items.json",
		MapResultsPrefix: "runs/" + export + "/" + runID + "/map", ListID: "contactlist_" + strings.Repeat("0", 36),
		Concurrency: concurrency, WorkerRPS: workerRPS, GroupSize: 1, StartedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		largest  int
		received int
	)
	r, err := runner.New(runner.Options{
		Definition: statemachine.Export,
		Template:   segpilot.Template,
		Functions: map[string]runner.Handler{
			"SyncBatchFunctionArn": func(_ context.Context, p json.RawMessage) (json.RawMessage, error) {
				var g run.Group
				if err := json.Unmarshal(p, &g); err != nil {
					return nil, err
				}
				got := run.BatchItems(g.Items)
				mu.Lock()
				largest, received = max(largest, len(got)), received+len(got)
				mu.Unlock()
				return json.Marshal(run.GroupSummary{First: got[0].Batch, Last: got[len(got)-1].Batch,
					Sent: 100 * len(got), Requests: len(got)})
			},
			"FinalizeFunctionArn": func(context.Context, json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{}`), nil },
		},
		Items:   func(context.Context, string) ([]any, error) { return items, nil },
		Results: func(context.Context, string, []byte) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Execute(context.Background(), input); err != nil {
		t.Fatal(err)
	}
	if received != batches || largest != 148 {
		t.Fatalf("the children got %d batches in groups of up to %d; want all %d, the largest 148 (a minute at 2.475 requests/s, 99 %% of a 40th)",
			received, largest, batches)
	}
	got := r.LargestPayload()
	t.Logf("largest state input/output/result: %d bytes (%.1f%% of the quota), groups of %d batches", got, 100*float64(got)/runner.PayloadQuota, largest)
	if got > runner.PayloadQuota/4 {
		t.Errorf("the largest payload, %d bytes, is within 4x of the %d-byte quota", got, runner.PayloadQuota)
	}
}
