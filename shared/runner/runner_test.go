package runner_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/runner"
)

// Error types named like the ones syncbatch returns: the runner, like
// Lambda, matches Retry/Catch on the Go type name.
type Throttled struct{}

func (Throttled) Error() string { return "throttled" }

type Transient struct{}

func (*Transient) Error() string { return "transient" }

type Unauthorized struct{}

func (Unauthorized) Error() string { return "unauthorized" }

func loadDefinition(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../statemachine/export.asl.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type harness struct {
	mu        sync.Mutex
	sleeps    []time.Duration
	calls     map[int]int
	finalized []map[string]any
	written   map[string][]byte // the ResultWriter's objects
}

type option func(*runner.Options)

func withTimeouts(m map[string]time.Duration) option {
	return func(o *runner.Options) { o.Timeouts = m }
}

func withFinalize(h runner.Handler) option {
	return func(o *runner.Options) { o.Functions["FinalizeFunctionArn"] = h }
}

func newRunner(t *testing.T, h *harness, items int, sync runner.Handler, opts ...option) *runner.Runner {
	t.Helper()
	h.calls = map[int]int{}
	o := runner.Options{
		Definition: loadDefinition(t),
		Template:   loadTemplate(t),
		Functions: map[string]runner.Handler{
			"SyncBatchFunctionArn": sync,
			"FinalizeFunctionArn": func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
				var in map[string]any
				if err := json.Unmarshal(p, &in); err != nil {
					return nil, err
				}
				h.mu.Lock()
				h.finalized = append(h.finalized, in)
				h.mu.Unlock()
				return json.RawMessage(`{"status":"done"}`), nil
			},
		},
		Items: func(ctx context.Context, key string) ([]any, error) {
			if key != "runs/e/r1/plans/none/items.json" {
				t.Errorf("items key %q", key)
			}
			out := make([]any, items)
			for i := range out {
				out[i] = map[string]any{"batch": float64(i + 1), "crc32c": "AAAAAA=="}
			}
			return out, nil
		},
		Results: func(ctx context.Context, key string, body []byte) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.written == nil {
				h.written = map[string][]byte{}
			}
			h.written[key] = body
			return nil
		},
		Sleep: func(ctx context.Context, d time.Duration) error {
			h.mu.Lock()
			h.sleeps = append(h.sleeps, d)
			h.mu.Unlock()
			return nil
		},
		Jitter: func() float64 { return 1 }, // the jitter's upper bound: the full computed delay
	}
	for _, opt := range opts {
		opt(&o)
	}
	r, err := runner.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// input is an execution input as ingest writes it, with groups of one
// batch: each child's input then names the one batch it sends.
func input(concurrency int) []byte {
	return []byte(`{"export":"e","runId":"r1","attempt":1,"plan":"none","itemsKey":"runs/e/r1/plans/none/items.json","mapResultsPrefix":"runs/e/r1/attempts/1/map","listId":"contactlist_1","workerRps":1.5,"groupSize":1,"concurrency":` + itoa(concurrency) + `}`)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// batchOf is the batch a child of one batch sends (its group's only item).
func batchOf(t *testing.T, p json.RawMessage) int {
	var group struct {
		Items []struct {
			Batch int
		}
		BatchInput struct {
			Export, RunID, ListID string
			WorkerRps             float64
		}
	}
	if err := json.Unmarshal(p, &group); err != nil {
		t.Error(err)
	}
	if in := group.BatchInput; in.Export != "e" || in.RunID != "r1" || in.ListID != "contactlist_1" || in.WorkerRps != 1.5 || len(group.Items) != 1 {
		t.Errorf("the item batcher gave %s", p)
		return 0
	}
	return group.Items[0].Batch
}

func syncRetrier(t *testing.T, r *runner.Runner, name string) runner.Retrier {
	t.Helper()
	st := r.Definition().States["SyncBatches"].ItemProcessor.States["SyncBatch"]
	for _, rule := range st.Retry {
		for _, e := range rule.ErrorEquals {
			if e == name {
				return rule
			}
		}
	}
	t.Fatalf("no retrier for %s in the definition", name)
	return runner.Retrier{}
}

func TestConcurrencyFromInput(t *testing.T) {
	t.Parallel()
	const limit, items = 3, 12
	h := &harness{}
	var (
		mu             sync.Mutex
		inflight, peak int
		release        = make(chan struct{})
	)
	r := newRunner(t, h, items, func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		mu.Unlock()
		<-release
		mu.Lock()
		inflight--
		mu.Unlock()
		return json.RawMessage(`{"ok":true}`), nil
	})
	done := make(chan error, 1)
	go func() { _, err := r.Execute(context.Background(), input(limit)); done <- err }()
	var err error
release:
	for released := 0; released < items; released++ {
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			n := inflight
			mu.Unlock()
			if n == min(limit, items-released) || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case release <- struct{}{}:
		case err = <-done: // the run ended early: it failed
			break release
		}
	}
	if err == nil {
		err = <-done
	}
	if err != nil {
		t.Fatal(err)
	}
	if peak != limit {
		t.Fatalf("peak concurrency %d, want MaxConcurrencyPath's %d", peak, limit)
	}
	if len(h.finalized) != 1 {
		t.Fatalf("finalize ran %d times", len(h.finalized))
	}
}

func TestRetriesFollowDefinition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		err       error
		failTimes int // then succeed; -1 = always fail
	}{
		{"Throttled", Throttled{}, 2},
		{"Transient", &Transient{}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := &harness{}
			r := newRunner(t, h, 2, func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
				b := batchOf(t, p)
				h.mu.Lock()
				h.calls[b]++
				n := h.calls[b]
				h.mu.Unlock()
				if b == 1 && (tt.failTimes < 0 || n <= tt.failTimes) {
					return nil, tt.err
				}
				return json.RawMessage(`{"ok":true}`), nil
			})
			if _, err := r.Execute(context.Background(), input(1)); err != nil {
				t.Fatal(err)
			}
			rule := syncRetrier(t, r, tt.name)
			wantRetries := tt.failTimes
			if wantRetries < 0 {
				wantRetries = rule.Attempts()
			}
			if h.calls[1] != wantRetries+1 {
				t.Fatalf("batch 1 called %d times, want %d", h.calls[1], wantRetries+1)
			}
			if len(h.sleeps) != wantRetries {
				t.Fatalf("%d waits, want %d", len(h.sleeps), wantRetries)
			}
			for i, got := range h.sleeps {
				want := math.Min(rule.Interval()*math.Pow(rule.Backoff(), float64(i)), rule.MaxDelaySeconds)
				if got != time.Duration(want*float64(time.Second)) {
					t.Errorf("wait %d = %v, want %vs", i, got, want)
				}
			}
			// A batch that exhausts its retries is recorded, and the run still finalizes.
			if len(h.finalized) != 1 {
				t.Fatalf("finalize ran %d times", len(h.finalized))
			}
			if _, failed := h.finalized[0]["mapError"]; failed {
				t.Fatalf("a caught batch failure must not fail the map: %v", h.finalized[0])
			}
		})
	}
}

func TestUnauthorizedStopsTheRun(t *testing.T) {
	t.Parallel()
	h := &harness{}
	var calls int
	var mu sync.Mutex
	r := newRunner(t, h, 50, func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		mu.Lock()
		calls++
		mu.Unlock()
		return nil, Unauthorized{}
	})
	if _, err := r.Execute(context.Background(), input(1)); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("%d batches tried after a refused key, want 1", calls)
	}
	if len(h.sleeps) != 0 {
		t.Fatalf("unauthorized was retried %d times", len(h.sleeps))
	}
	mapErr, ok := h.finalized[0]["mapError"].(map[string]any)
	if !ok || !strings.Contains(mapErr["Cause"].(string), "Unauthorized") {
		t.Fatalf("finalize input %v lacks the Unauthorized map error", h.finalized[0])
	}
}

// StartRun returns as StartExecution does, before the execution ends, and
// starts a name once.
func TestStartRunOncePerName(t *testing.T) {
	t.Parallel()
	h := &harness{}
	var calls atomic.Int32
	release := make(chan struct{})
	r := newRunner(t, h, 1, func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		calls.Add(1)
		<-release
		return json.RawMessage(`{}`), nil
	})
	for i, want := range []bool{true, false, false} {
		started, err := r.StartRun(context.Background(), "run-1", input(1))
		if err != nil || started != want {
			t.Fatalf("start %d: started=%v err=%v, want %v", i, started, err, want)
		}
	}
	close(release) // the execution was still going when StartRun returned
	r.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d executions, want 1", n)
	}
}

func TestErrorName(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]string{Throttled{}: "Throttled", &Transient{}: "Transient"} {
		if got := runner.ErrorName(err); got != want {
			t.Errorf("ErrorName(%T) = %q, want %q", err, got, want)
		}
	}
}

func loadTemplate(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMapResultsGoToTheRunPrefix: the Map's children report kilobytes each;
// their results go to the run's prefix in the bucket (ResultWriter), and the
// Map's own result, only where they went, stays far under the quota.
func TestMapResultsGoToTheRunPrefix(t *testing.T) {
	t.Parallel()
	const items, size = 600, 2048
	h := &harness{}
	r := newRunner(t, h, items, func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"batch":` + itoa(batchOf(t, p)) + `,"note":"` + strings.Repeat("x", size) + `"}`), nil
	})
	if _, err := r.Execute(context.Background(), input(8)); err != nil {
		t.Fatalf("%d children of %d bytes each: %v", items, size, err)
	}
	if got := r.LargestPayload(); got > 4096 {
		t.Errorf("largest payload %d bytes; the Map's result should be only where its results went", got)
	}
	var manifest, succeeded string
	for key := range h.written {
		switch {
		case !strings.HasPrefix(key, "runs/e/r1/attempts/1/map/"):
			t.Errorf("result object %s is outside the run's map/ prefix", key)
		case strings.HasSuffix(key, "/manifest.json"):
			manifest = key
		case strings.HasSuffix(key, "/SUCCEEDED_0.json"):
			succeeded = key
		}
	}
	var ends []struct{ Status, Output string }
	if err := json.Unmarshal(h.written[succeeded], &ends); err != nil || len(ends) != items || manifest == "" {
		t.Fatalf("results %v: %d children exported (%v), manifest %q; want %d and a manifest", keysOf(h.written), len(ends), err, manifest, items)
	}
	fin := h.finalized[0]
	if _, failed := fin["mapError"]; failed {
		t.Fatalf("finalize got a map error: %v", fin)
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLambdaErrorsAreRetried: a syncbatch or finalize invocation that
// Lambda fails (a timeout, which Lambda reports as Sandbox.Timedout, or
// Lambda.Unknown from older runtimes; or one of the service errors Step
// Functions recommends retrying) is retried with backoff, not recorded as
// a failed batch or a failed run.
func TestLambdaErrorsAreRetried(t *testing.T) {
	t.Parallel()
	names := []string{"Sandbox.Timedout", "Lambda.Unknown", "Lambda.ClientExecutionTimeoutException", "Lambda.ServiceException",
		"Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := &harness{}
			var finalizeCalls int
			r := newRunner(t, h, 2, func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
				b := batchOf(t, p)
				h.mu.Lock()
				h.calls[b]++
				n := h.calls[b]
				h.mu.Unlock()
				if b == 1 && n <= 2 {
					if name == "Sandbox.Timedout" {
						<-ctx.Done() // outlives the function's timeout
						time.Sleep(10 * time.Millisecond)
						return json.RawMessage(`{"late":true}`), nil
					}
					return nil, &runner.StateError{Name: name, Cause: "injected"}
				}
				return json.RawMessage(`{"ok":true}`), nil
			}, withTimeouts(map[string]time.Duration{"SyncBatchFunctionArn": 100 * time.Millisecond, "FinalizeFunctionArn": time.Minute}),
				withFinalize(func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
					h.mu.Lock()
					finalizeCalls++
					n := finalizeCalls
					h.mu.Unlock()
					if n <= 2 && name != "Sandbox.Timedout" {
						return nil, &runner.StateError{Name: name, Cause: "injected"}
					}
					var in map[string]any
					if err := json.Unmarshal(p, &in); err != nil {
						return nil, err
					}
					h.mu.Lock()
					h.finalized = append(h.finalized, in)
					h.mu.Unlock()
					return json.RawMessage(`{"status":"done"}`), nil
				}))
			out, err := r.Execute(context.Background(), input(1))
			r.Wait()
			if err != nil {
				t.Fatalf("%s was not retried: %v", name, err)
			}
			if h.calls[1] != 3 {
				t.Fatalf("batch 1 called %d times; want 3 (two %s, then success)", h.calls[1], name)
			}
			if len(h.finalized) != 1 {
				t.Fatalf("finalize completed %d times", len(h.finalized))
			}
			if _, failed := h.finalized[0]["mapError"]; failed || !strings.Contains(string(out), "done") {
				t.Fatalf("the run saw a failure: finalize input %v, output %s", h.finalized[0], out)
			}
			for _, d := range h.sleeps {
				if d <= 0 {
					t.Errorf("a retry without backoff: %v", h.sleeps)
				}
			}
		})
	}
}
