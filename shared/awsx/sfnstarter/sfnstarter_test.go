package sfnstarter

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go"

	"github.com/segpilot/segpilot/shared/awsx"
	"github.com/segpilot/segpilot/shared/run"
)

const machineARN = "arn:aws:states:us-east-1:123456789012:stateMachine:segpilot-export"

type startInput struct {
	StateMachineArn string `json:"stateMachineArn"`
	Name            string `json:"name"`
	Input           string `json:"input"`
}

// fakeSFN answers StartExecution and DescribeExecution (JSON 1.0) like Step
// Functions: a name is used once; throttle makes the next answers
// ThrottlingException.
type fakeSFN struct {
	mu       sync.Mutex
	started  map[string]string // name -> input
	status   map[string]string // name -> status other than RUNNING
	throttle int
	calls    int
}

func executionARN(name string) string {
	return strings.Replace(machineARN, ":stateMachine:", ":execution:", 1) + ":" + name
}

func (f *fakeSFN) snapshot() (started map[string]string, calls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	started = make(map[string]string, len(f.started))
	for k, v := range f.started {
		started[k] = v
	}
	return started, f.calls
}

func (f *fakeSFN) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	fail := func(typ string) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": typ})
	}
	var in startInput
	var describe struct {
		ExecutionArn string `json:"executionArn"`
	}
	target := r.Header.Get("X-Amz-Target")
	var err error
	switch target {
	case "AWSStepFunctions.StartExecution":
		err = json.NewDecoder(r.Body).Decode(&in)
	case "AWSStepFunctions.DescribeExecution":
		err = json.NewDecoder(r.Body).Decode(&describe)
	default:
		fail("InvalidAction")
		return
	}
	if err != nil {
		fail("SerializationException")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.throttle > 0 {
		f.throttle--
		fail("ThrottlingException")
		return
	}
	if target == "AWSStepFunctions.DescribeExecution" {
		for name := range f.started {
			if executionARN(name) == describe.ExecutionArn {
				out := map[string]any{"executionArn": describe.ExecutionArn, "status": cmp.Or(f.status[name], "RUNNING"),
					"stateMachineArn": machineARN, "startDate": 1.7e9}
				if out["status"] != "RUNNING" && out["status"] != "PENDING_REDRIVE" {
					out["stopDate"] = 1.8e9
				}
				json.NewEncoder(w).Encode(out)
				return
			}
		}
		fail("ExecutionDoesNotExist")
		return
	}
	if in.StateMachineArn != machineARN {
		fail("StateMachineDoesNotExist")
		return
	}
	if _, ok := f.started[in.Name]; ok {
		fail("ExecutionAlreadyExists")
		return
	}
	f.started[in.Name] = in.Input
	json.NewEncoder(w).Encode(map[string]any{
		"executionArn": executionARN(in.Name),
		"startDate":    1.7e9,
	})
}

// newStarter returns a Starter on fake with SDK retries off, so each fake
// answer reaches StartRun as is.
func newStarter(t *testing.T, fake *fakeSFN, arn string) *Starter {
	t.Helper()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "not-a-secret", ""),
	}
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	return New(awsx.NewSFNClient(cfg, srv.URL), arn)
}

func TestStartRunOnceWithInput(t *testing.T) {
	t.Parallel()
	fake := &fakeSFN{started: map[string]string{}}
	s := newStarter(t, fake, machineARN)
	input := []byte(`{"export":"vip","runId":"r-1","itemsKey":"runs/vip/r-1/items.json"}`)

	started, err := s.StartRun(context.Background(), "vip-r-1", input)
	if err != nil || !started {
		t.Fatalf("first StartRun = %v, %v; want true, nil", started, err)
	}
	if execs, _ := fake.snapshot(); execs["vip-r-1"] != string(input) {
		t.Fatalf("execution input = %q, want %q", execs["vip-r-1"], input)
	}
	// A duplicate S3 event: same run id, nothing new starts, no error.
	started, err = s.StartRun(context.Background(), "vip-r-1", input)
	if err != nil || started {
		t.Fatalf("duplicate StartRun = %v, %v; want false, nil", started, err)
	}
	if execs, _ := fake.snapshot(); len(execs) != 1 {
		t.Fatalf("executions = %d, want 1", len(execs))
	}
}

func TestStartRunWithoutInput(t *testing.T) {
	t.Parallel()
	fake := &fakeSFN{started: map[string]string{}}
	s := newStarter(t, fake, machineARN)
	if started, err := s.StartRun(context.Background(), "r-empty", nil); err != nil || !started {
		t.Fatalf("StartRun = %v, %v; want true, nil", started, err)
	}
	if execs, _ := fake.snapshot(); execs["r-empty"] != "" {
		t.Fatalf("input sent = %q, want none (Step Functions then uses {})", execs["r-empty"])
	}
}

func TestStartRunThrottled(t *testing.T) {
	t.Parallel()
	fake := &fakeSFN{started: map[string]string{}, throttle: 1}
	s := newStarter(t, fake, machineARN)
	started, err := s.StartRun(context.Background(), "vip-r-2", []byte(`{}`))
	var apiErr smithy.APIError
	if started || !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ThrottlingException" {
		t.Fatalf("StartRun = %v, %v; want false and a ThrottlingException", started, err)
	}
	if !strings.Contains(err.Error(), "vip-r-2") {
		t.Fatalf("error does not name the run: %v", err)
	}
	// Throttling is transient: the next call starts the run.
	started, err = s.StartRun(context.Background(), "vip-r-2", []byte(`{}`))
	if err != nil || !started {
		t.Fatalf("StartRun after throttling = %v, %v; want true, nil", started, err)
	}
}

func TestStartRunOtherErrors(t *testing.T) {
	t.Parallel()
	fake := &fakeSFN{started: map[string]string{}}
	s := newStarter(t, fake, machineARN+"-gone")
	started, err := s.StartRun(context.Background(), "vip-r-3", []byte(`{}`))
	if started || err == nil || !strings.Contains(err.Error(), "StateMachineDoesNotExist") {
		t.Fatalf("StartRun = %v, %v; want false and StateMachineDoesNotExist", started, err)
	}
}

func TestAttemptLiveness(t *testing.T) {
	t.Parallel()
	fake := &fakeSFN{started: map[string]string{}, status: map[string]string{
		"stopped": "ABORTED", "failed": "FAILED", "timed-out": "TIMED_OUT", "done": "SUCCEEDED", "redrive": "PENDING_REDRIVE",
	}}
	s := newStarter(t, fake, machineARN)
	ctx := context.Background()
	for _, name := range []string{"running", "stopped", "failed", "timed-out", "done", "redrive"} {
		if _, err := s.StartRun(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		want run.LiveState
	}{
		{"running", run.LiveRunning},
		{"redrive", run.LiveRunning},
		{"stopped", run.LiveEnded},
		{"failed", run.LiveEnded},
		{"timed-out", run.LiveEnded},
		{"done", run.LiveEnded},
		{"never-started", run.LiveNotStarted},
	}
	for _, tt := range tests {
		got, err := s.Attempt(ctx, run.Holder{Execution: tt.name})
		if err != nil || got.State != tt.want {
			t.Errorf("Attempt(%s) = %+v, %v; want %v", tt.name, got, err, tt.want)
		}
		if ended := tt.want == run.LiveEnded; ended != !got.EndedAt.IsZero() || ended && got.EndedAt.Unix() != 1.8e9 {
			t.Errorf("Attempt(%s).EndedAt = %v; want the stop date only when ended", tt.name, got.EndedAt)
		}
	}
	// Any other failure is an error naming the execution, never a guess.
	fake.mu.Lock()
	fake.throttle = 1
	fake.mu.Unlock()
	if _, err := s.Attempt(ctx, run.Holder{Execution: "running"}); err == nil || !strings.Contains(err.Error(), "running") || !strings.Contains(err.Error(), "ThrottlingException") {
		t.Errorf("Attempt while throttled: %v; want a ThrottlingException naming the execution", err)
	}
}

func TestValidateRunID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id string
		ok bool
	}{
		{"vip-newsletter-20261101T120000Z-3f2a9c", true},
		{strings.Repeat("a", 80), true},
		{strings.Repeat("a", 81), false},
		{"", false},
		{"has space", false},
		{"runs/vip", false},
		{"a:b", false},
		{"tab\there", false},
	}
	for _, tt := range tests {
		if err := ValidateRunID(tt.id); (err == nil) != tt.ok {
			t.Errorf("ValidateRunID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
	// An invalid id never reaches Step Functions.
	fake := &fakeSFN{started: map[string]string{}}
	s := newStarter(t, fake, machineARN)
	if _, err := s.StartRun(context.Background(), "bad id", []byte(`{}`)); err == nil {
		t.Fatal("StartRun with an invalid id succeeded")
	}
	if _, calls := fake.snapshot(); calls != 0 {
		t.Fatalf("calls = %d, want 0", calls)
	}
}
