package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/runner"
)

// The runner refuses what Step Functions and Lambda refuse, so a change
// that would fail in the cloud fails here first. Each test below runs a
// small definition written for the rule it checks.

// quota is Step Functions' payload quota: 256 KiB of UTF-8 per state input
// or output, per task result and per execution input.
const quota = 256 * 1024

func mustNew(t *testing.T, opts runner.Options) *runner.Runner {
	t.Helper()
	if opts.Timeouts == nil {
		opts.Timeouts = map[string]time.Duration{}
		for name := range opts.Functions {
			opts.Timeouts[name] = time.Minute
		}
	}
	r, err := runner.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// blob is a JSON object whose encoding is n bytes long.
func blob(n int) json.RawMessage {
	const frame = `{"x":""}`
	return json.RawMessage(`{"x":"` + strings.Repeat("a", n-len(frame)) + `"}`)
}

func stateError(t *testing.T, err error) *runner.StateError {
	t.Helper()
	var se *runner.StateError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want a *runner.StateError", err, err)
	}
	return se
}

// taskWithCatch is one Lambda task whose every error is caught by a Pass.
const taskWithCatch = `{
  "StartAt": "T",
  "States": {
    "T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
          "Parameters": {"FunctionName": "${F}", "Payload.$": "$"},
          "OutputPath": "$.Payload",
          "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
          "End": true},
    "Caught": {"Type": "Pass", "End": true}
  }
}`

func TestTaskResultOverQuotaIsNotCaught(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		size int
		fail bool
	}{{quota - 200, false}, {quota + 1, true}} {
		r := mustNew(t, runner.Options{Definition: []byte(taskWithCatch), Functions: map[string]runner.Handler{
			"F": func(context.Context, json.RawMessage) (json.RawMessage, error) { return blob(tt.size), nil },
		}})
		out, err := r.Execute(context.Background(), []byte(`{}`))
		if !tt.fail {
			if err != nil {
				t.Fatalf("a %d-byte result: %v", tt.size, err)
			}
			continue
		}
		if se := stateError(t, err); se.Name != "States.DataLimitExceeded" {
			t.Fatalf("a %d-byte result: %s; want States.DataLimitExceeded", tt.size, se.Name)
		}
		if out != nil {
			t.Fatalf("States.ALL caught States.DataLimitExceeded: output %s", out)
		}
	}
}

// A state's output is checked where it is made: a ResultPath merging a
// result (each part under the quota) into the input can be over it, and
// an End state has no next state whose input check would see it.
func TestStateOutputOverQuotaIsNotCaught(t *testing.T) {
	t.Parallel()
	half := string(blob(quota / 2))
	for _, tt := range []struct{ name, def, state string }{
		{"task result merged, End", `{"StartAt": "T", "States": {
		  "T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
		        "Parameters": {"FunctionName": "${F}", "Payload.$": "$.small"}, "ResultPath": "$.result",
		        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], "End": true},
		  "Caught": {"Type": "Pass", "End": true}}}`, "T"},
		{"pass merged, End", `{"StartAt": "P", "States": {
		  "P": {"Type": "Pass", "Parameters": {"copy.$": "$.big"}, "ResultPath": "$.copy", "End": true}}}`, "P"},
		// The next state's input check would fail too, naming the wrong state.
		{"pass merged, then Next", `{"StartAt": "P", "States": {
		  "P": {"Type": "Pass", "Parameters": {"copy.$": "$.big"}, "ResultPath": "$.copy", "Next": "After"},
		  "After": {"Type": "Pass", "End": true}}}`, "P"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := mustNew(t, runner.Options{Definition: []byte(tt.def), Functions: map[string]runner.Handler{
				"F": func(context.Context, json.RawMessage) (json.RawMessage, error) { return blob(quota / 2), nil },
			}})
			out, err := r.Execute(context.Background(), []byte(`{"big":`+half+`,"small":{}}`))
			if err == nil {
				t.Fatalf("a %d-byte output left state %s: no error", len(out), tt.state)
			}
			se := stateError(t, err)
			if se.Name != "States.DataLimitExceeded" || out != nil || !strings.Contains(se.Cause, "the output of state "+tt.state+" ") {
				t.Fatalf("%s: %s (output %d bytes); want an uncaught States.DataLimitExceeded for the output of state %s", se.Name, se.Cause, len(out), tt.state)
			}
		})
	}
}

func TestExecutionInputOverQuotaIsRefused(t *testing.T) {
	t.Parallel()
	r := mustNew(t, runner.Options{Definition: []byte(taskWithCatch), Functions: map[string]runner.Handler{
		"F": func(context.Context, json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{}`), nil },
	}})
	if _, err := r.StartRun(context.Background(), "big", blob(quota+1)); err == nil {
		t.Fatal("an execution input over 256 KiB was accepted")
	}
}

func TestRuntimeErrorIsNotCaught(t *testing.T) {
	t.Parallel()
	def := `{"StartAt": "P", "States": {
	  "P": {"Type": "Pass", "Parameters": {"x.$": "$.missing"}, "End": true}}}`
	wrapped := `{"StartAt": "T", "States": {
	  "T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
	        "Parameters": {"FunctionName": "${F}", "Payload.$": "$.missing"},
	        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], "End": true},
	  "Caught": {"Type": "Pass", "End": true}}}`
	for _, d := range []string{def, wrapped} {
		r := mustNew(t, runner.Options{Definition: []byte(d), Functions: map[string]runner.Handler{
			"F": func(context.Context, json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{}`), nil },
		}})
		out, err := r.Execute(context.Background(), []byte(`{}`))
		if se := stateError(t, err); se.Name != "States.Runtime" || out != nil {
			t.Fatalf("a missing path gave %s (output %s); want an uncaught States.Runtime", se.Name, out)
		}
	}
}

// mapDef is a Distributed Map over $.items whose failures go to a Pass.
const mapDef = `{
  "StartAt": "M",
  "States": {
    "M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 4, "ToleratedFailurePercentage": 0,
          "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "T", "States": {
              "T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": "${F}", "Payload.$": "$"}, "OutputPath": "$.Payload", "End": true}}},
          "ResultPath": null,
          "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.mapError", "Next": "After"}],
          "Next": "After"},
    "After": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
              "Parameters": {"FunctionName": "${After}", "Payload.$": "$"}, "End": true}
  }
}`

func items(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(itoa(i))
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func TestMapResultOverQuotaIsNotCaught(t *testing.T) {
	t.Parallel()
	// 300 children of 1 KB each: every one is small, their array is not,
	// and ResultPath: null does not help (the result is built first).
	var after int
	var mu sync.Mutex
	r := mustNew(t, runner.Options{Definition: []byte(mapDef), Functions: map[string]runner.Handler{
		"F": func(context.Context, json.RawMessage) (json.RawMessage, error) { return blob(1024), nil },
		"After": func(context.Context, json.RawMessage) (json.RawMessage, error) {
			mu.Lock()
			after++
			mu.Unlock()
			return json.RawMessage(`{}`), nil
		},
	}})
	_, err := r.Execute(context.Background(), items(300))
	if se := stateError(t, err); se.Name != "States.DataLimitExceeded" {
		t.Fatalf("a 300 KB Map result gave %s; want States.DataLimitExceeded", se.Name)
	}
	if after != 0 {
		t.Fatal("the Map's Catch caught States.DataLimitExceeded")
	}
}

// When the Map fails, Step Functions stops starting children and moves on
// (here to its Catch), but Lambda invocations already under way finish on
// their own: the next state must not wait for them, and they still write.
func TestMapFailureLeavesRunningChildrenRunning(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var (
		mu       sync.Mutex
		started  int
		finished int
		ctxErr   error
	)
	afterRan := make(chan struct{})
	r := mustNew(t, runner.Options{Definition: []byte(mapDef), Functions: map[string]runner.Handler{
		"F": func(ctx context.Context, p json.RawMessage) (json.RawMessage, error) {
			mu.Lock()
			started++
			mu.Unlock()
			if string(p) == "0" {
				return nil, Unauthorized{}
			}
			<-release
			mu.Lock()
			finished++
			ctxErr = ctx.Err()
			mu.Unlock()
			return json.RawMessage(`{}`), nil
		},
		"After": func(context.Context, json.RawMessage) (json.RawMessage, error) {
			close(afterRan)
			return json.RawMessage(`{}`), nil
		},
	}})
	done := make(chan error, 1)
	go func() { _, err := r.Execute(context.Background(), items(20)); done <- err }()
	select {
	case <-afterRan:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the state after a failed Map waited for the children still running")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(release)
	r.Wait()
	mu.Lock()
	defer mu.Unlock()
	if started > 4 {
		t.Errorf("%d children started; a failed Map starts no more than were running (MaxConcurrency 4)", started)
	}
	if finished != started-1 || ctxErr != nil {
		t.Errorf("%d of %d running children finished (context error %v); want every one, uncancelled", finished, started-1, ctxErr)
	}
}

// A handler that outlives its function's timeout fails as Lambda reports a
// timeout, and the definition's retriers see that name.
func TestFunctionTimeoutIsLambdasError(t *testing.T) {
	t.Parallel()
	def := `{"StartAt": "T", "States": {
	  "T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
	        "Parameters": {"FunctionName": "${F}", "Payload.$": "$"},
	        "Retry": [{"ErrorEquals": ["Sandbox.Timedout"], "MaxAttempts": 1, "IntervalSeconds": 1}],
	        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], "End": true},
	  "Caught": {"Type": "Pass", "End": true}}}`
	const timeout = 150 * time.Millisecond
	var (
		mu        sync.Mutex
		calls     int
		deadlines []time.Duration
	)
	r := mustNew(t, runner.Options{Definition: []byte(def),
		Functions: map[string]runner.Handler{"F": func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			dl, ok := ctx.Deadline()
			mu.Lock()
			calls++
			if ok {
				deadlines = append(deadlines, time.Until(dl))
			}
			mu.Unlock()
			time.Sleep(3 * timeout) // ignores its context, as a stuck call would
			return json.RawMessage(`{}`), nil
		}},
		Timeouts: map[string]time.Duration{"F": timeout},
		Sleep:    func(context.Context, time.Duration) error { return nil },
	})
	out, err := r.Execute(context.Background(), []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Wait()
	var caught struct{ Error, Cause string }
	if err := json.Unmarshal(out, &caught); err != nil {
		t.Fatal(err)
	}
	if caught.Error != "Sandbox.Timedout" || !strings.Contains(caught.Cause, "timed out") {
		t.Fatalf("caught %+v; want Sandbox.Timedout, as Lambda reports a timeout", caught)
	}
	if calls != 2 {
		t.Fatalf("%d calls; want 2 (the retrier on Sandbox.Timedout allows one retry)", calls)
	}
	for _, d := range deadlines {
		if d <= 0 || d > timeout {
			t.Errorf("the handler's context deadline was %v away; want within the function's %v timeout", d, timeout)
		}
	}
	if len(deadlines) != 2 {
		t.Errorf("%d of 2 calls had a context deadline; Lambda's context always carries one", len(deadlines))
	}
}

func TestEveryFunctionNeedsATimeout(t *testing.T) {
	t.Parallel()
	_, err := runner.New(runner.Options{Definition: []byte(taskWithCatch), Functions: map[string]runner.Handler{
		"F": func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil },
	}, Timeouts: map[string]time.Duration{}})
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("New without a timeout for F: %v; want an error naming the missing timeout", err)
	}
}

// The deployed functions' timeouts come from template.yaml, the file SAM
// deploys, so the runner cannot enforce other numbers than Lambda does.
func TestTimeoutsFromTemplate(t *testing.T) {
	t.Parallel()
	got, err := runner.FunctionTimeouts(loadTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{"SyncBatchFunctionArn": 300 * time.Second, "FinalizeFunctionArn": 900 * time.Second}
	for name, d := range want {
		if got[name] != d {
			t.Errorf("timeout of %s = %v, want %v (template.yaml)", name, got[name], d)
		}
	}
}

func TestUnimplementedFieldsAreRefused(t *testing.T) {
	t.Parallel()
	for _, field := range []string{`"ResultSelector": {"a.$": "$"}`, `"TimeoutSeconds": 5`, `"InputPath": "$"`} {
		def := `{"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
		  "Parameters": {"FunctionName": "${F}"}, ` + field + `, "End": true}}}`
		_, err := runner.Parse([]byte(def))
		if err == nil {
			t.Errorf("a state with %s parsed; the runner would ignore what the cloud applies", field)
		}
	}
}
