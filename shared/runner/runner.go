package runner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segpilot/segpilot/shared/clock"
)

// PayloadQuota is Step Functions' limit on a state's input or output, a
// task's result and an execution's input: 256 KiB as a UTF-8 string. Past
// it a state fails with States.DataLimitExceeded, which no Catch handles.
const PayloadQuota = 256 * 1024

// NameReuseAfter is how long Step Functions keeps an execution's name
// after the execution closed: a StartExecution with that name before then
// starts nothing.
const NameReuseAfter = 90 * 24 * time.Hour

// Handler is an in-process stand-in for a Lambda function.
type Handler func(ctx context.Context, payload json.RawMessage) (json.RawMessage, error)

// ItemLoader reads a Distributed Map's items (a JSON array) from the bucket.
type ItemLoader func(ctx context.Context, key string) ([]any, error)

// ResultSink writes one object of a Distributed Map's ResultWriter export.
type ResultSink func(ctx context.Context, key string, body []byte) error

// ExecutionNames remembers the execution names used, as Step Functions
// does for a state machine: a name started once is not started again
// until NameReuseAfter has passed since its execution closed.
type ExecutionNames interface {
	// Claim records name as started; false when it is taken.
	Claim(ctx context.Context, name string) (bool, error)
	// Closed records that name's execution ended.
	Closed(ctx context.Context, name string) error
}

// Progress is reported after each Map child finishes. Done, Failed and
// Total count the Map's items: a child that processes a group of them
// (ItemBatcher) counts its items when it ends.
type Progress struct {
	State               string
	Done, Failed, Total int
}

// Options wires the runner to the code behind the definition's resources.
type Options struct {
	Definition []byte
	// Functions maps DefinitionSubstitutions names ("SyncBatchFunctionArn")
	// to the handlers that the cloud would invoke.
	Functions map[string]Handler
	// Template is template.yaml: each function's Timeout is enforced as
	// Lambda enforces it (see FunctionTimeouts).
	Template []byte
	// Timeouts override the template's, by substitution name (tests).
	// Every function needs a timeout from one or the other.
	Timeouts map[string]time.Duration
	Items    ItemLoader
	// Results receives a ResultWriter's objects; needed when the
	// definition has a ResultWriter.
	Results ResultSink
	// Names keeps execution names; default: this process's memory only.
	Names ExecutionNames
	// Ended hears of an execution that failed (or whose end could not be
	// recorded): StartRun's caller has returned by then. Default: nothing.
	Ended func(name string, err error)
	// Context is what executions run under: cancelling it stops them all
	// (the process ending). Default: context.Background().
	Context context.Context
	// Sleep waits between retries; tests inject a recorder. Default: a timer honouring ctx.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a number in [0,1) for FULL jitter; default math/rand.
	Jitter   func() float64
	Progress func(Progress)
}

// StateError is a failed state: Name is what Retry/Catch ErrorEquals match.
type StateError struct {
	Name  string
	Cause string
}

func (e *StateError) Error() string { return e.Name + ": " + e.Cause }

// ErrorName is the name Step Functions sees for a Lambda handler's error:
// the Go type name of the returned error, as aws-lambda-go reports it in
// errorType (a wrapped error reports as its wrapper's type).
func ErrorName(err error) string {
	var se *StateError
	if errors.As(err, &se) && reflect.TypeOf(err) == reflect.TypeOf(se) {
		return se.Name
	}
	t := reflect.TypeOf(err)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// Runner executes one state machine definition.
type Runner struct {
	def      *Definition
	opts     Options
	timeouts map[string]time.Duration

	// stray counts goroutines that may outlive the state that started
	// them: invocations past their timeout, and children of a failed Map.
	stray   sync.WaitGroup
	largest atomic.Int64
}

// New parses the definition and checks every function it names is wired
// and has a timeout.
func New(opts Options) (*Runner, error) {
	def, err := Parse(opts.Definition)
	if err != nil {
		return nil, err
	}
	if opts.Sleep == nil {
		opts.Sleep = clock.Sleep
	}
	if opts.Jitter == nil {
		opts.Jitter = mrand.Float64
	}
	if opts.Names == nil {
		opts.Names = &memoryNames{used: map[string]bool{}}
	}
	timeouts := map[string]time.Duration{}
	if opts.Template != nil {
		if timeouts, err = FunctionTimeouts(opts.Template); err != nil {
			return nil, err
		}
	}
	for name, d := range opts.Timeouts {
		timeouts[name] = d
	}
	r := &Runner{def: def, opts: opts, timeouts: timeouts}
	if err := r.checkWiring(def); err != nil {
		return nil, err
	}
	return r, nil
}

// Definition exposes the parsed definition (tests read its numbers).
func (r *Runner) Definition() *Definition { return r.def }

// Wait blocks until every invocation the runner started has returned,
// including those a timeout or a failed Map left running.
func (r *Runner) Wait() { r.stray.Wait() }

// LargestPayload is the largest state input, output or result seen so
// far, in bytes: how close the runs came to PayloadQuota.
func (r *Runner) LargestPayload() int { return int(r.largest.Load()) }

func (r *Runner) checkWiring(def *Definition) error {
	for name, st := range def.States {
		if st.Type == "Task" {
			if _, _, err := r.function(st); err != nil {
				return fmt.Errorf("state %s: %w", name, err)
			}
		}
		if st.ItemReader != nil && r.opts.Items == nil {
			return fmt.Errorf("state %s: the Map has an ItemReader but the runner has no item loader", name)
		}
		if st.ResultWriter != nil && r.opts.Results == nil {
			return fmt.Errorf("state %s: the Map has a ResultWriter but the runner has no result sink", name)
		}
		if st.ItemProcessor != nil {
			if err := r.checkWiring(st.ItemProcessor); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Runner) function(st *State) (Handler, time.Duration, error) {
	var p struct {
		FunctionName string `json:"FunctionName"`
	}
	if err := json.Unmarshal(st.Parameters, &p); err != nil {
		return nil, 0, fmt.Errorf("parameters: %w", err)
	}
	name, ok := Placeholder(p.FunctionName)
	if !ok {
		return nil, 0, fmt.Errorf("FunctionName %q is not a ${...} substitution", p.FunctionName)
	}
	h, ok := r.opts.Functions[name]
	if !ok {
		return nil, 0, fmt.Errorf("no local handler for %s", name)
	}
	timeout, ok := r.timeouts[name]
	if !ok || timeout <= 0 {
		return nil, 0, fmt.Errorf("no timeout for %s: Lambda enforces one, so the runner must (give Options.Template)", name)
	}
	return h, timeout, nil
}

// StartRun starts an execution of the state machine and returns at once,
// as StartExecution does: the execution runs on its own goroutine, under
// Options.Context rather than the caller's ctx (an execution outlives the
// request that started it), until it ends or that context is cancelled
// (Ctrl-C locally); then its name is recorded closed (ExecutionNames),
// which is how the local liveness check tells it ended. A name already used is not run again (Step Functions'
// ExecutionAlreadyExists) and reports started=false. Wait waits for every
// execution started.
func (r *Runner) StartRun(ctx context.Context, name string, input []byte) (bool, error) {
	if len(input) > PayloadQuota {
		// StartExecution refuses it before any execution exists.
		return false, fmt.Errorf("starting %s: the execution input is %d bytes, over Step Functions' %d-byte quota", name, len(input), PayloadQuota)
	}
	claimed, err := r.opts.Names.Claim(ctx, name)
	if err != nil || !claimed {
		return false, err
	}
	exec := r.opts.Context
	if exec == nil {
		exec = context.Background()
	}
	r.stray.Add(1)
	go func() {
		defer r.stray.Done()
		var inFlight sync.WaitGroup
		if _, err := r.execute(&execution{flow: exec, invoke: exec, inFlight: &inFlight}, input); err != nil && r.opts.Ended != nil {
			r.opts.Ended(name, err)
		}
		// Closed once nothing of it runs: a failed Map's children, and an
		// invocation past its timeout, go on after the execution ended.
		inFlight.Wait()
		if err := r.opts.Names.Closed(context.WithoutCancel(exec), name); err != nil && r.opts.Ended != nil {
			r.opts.Ended(name, err)
		}
	}()
	return true, nil
}

// execution is one running (child) execution: flow stops its states (a
// failed Map stops its children's), invoke bounds its Lambda invocations
// (only the whole run's end, or Ctrl-C locally, does).
type execution struct {
	flow     context.Context
	invoke   context.Context
	inFlight *sync.WaitGroup // every goroutine of the execution and its children
}

// Execute runs the definition on input and returns its output.
func (r *Runner) Execute(ctx context.Context, input []byte) (json.RawMessage, error) {
	return r.execute(&execution{flow: ctx, invoke: ctx, inFlight: &sync.WaitGroup{}}, input)
}

func (r *Runner) execute(ex *execution, input []byte) (json.RawMessage, error) {
	var in any
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, fmt.Errorf("execution input: %w", err)
	}
	if err := r.checkSize("the execution input", in); err != nil {
		return nil, err
	}
	out, err := r.run(ex, r.def, in, nil)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// checkSize fails with States.DataLimitExceeded when v's JSON is over the quota.
func (r *Runner) checkSize(what string, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // Step Functions counts the characters, not Go's \u003c escapes
	if err := enc.Encode(v); err != nil {
		return &StateError{Name: "States.Runtime", Cause: what + ": " + err.Error()}
	}
	n := int64(buf.Len() - 1) // the encoder's newline
	for {
		cur := r.largest.Load()
		if n <= cur || r.largest.CompareAndSwap(cur, n) {
			break
		}
	}
	if n > PayloadQuota {
		return &StateError{Name: "States.DataLimitExceeded",
			Cause: fmt.Sprintf("%s is %d bytes, over the %d-byte payload quota", what, n, PayloadQuota)}
	}
	return nil
}

func (r *Runner) run(ex *execution, def *Definition, input any, item *contextObject) (any, error) {
	name := def.StartAt
	for {
		if err := ex.flow.Err(); err != nil {
			return nil, err // stopped: its Map failed, or the run was cancelled
		}
		st := def.States[name]
		if err := r.checkSize("the input of state "+name, input); err != nil {
			return nil, err
		}
		out, err := r.state(ex, name, st, input, item)
		if err == nil {
			err = r.checkSize("the output of state "+name, out)
		}
		if err != nil {
			var se *StateError
			if !errors.As(err, &se) || ex.flow.Err() != nil {
				return nil, err
			}
			next, caught, cerr := catch(st, se, input)
			if cerr != nil {
				return nil, cerr
			}
			if next == "" {
				return nil, err
			}
			name, input = next, caught
			continue
		}
		if st.End || st.Type == "Fail" {
			return out, nil
		}
		name, input = st.Next, out
	}
}

func catch(st *State, se *StateError, input any) (string, any, error) {
	for _, c := range st.Catch {
		if !matches(c.ErrorEquals, se.Name) {
			continue
		}
		errObj := map[string]any{"Error": se.Name, "Cause": se.Cause}
		path := "$"
		if c.ResultPath != nil {
			path = *c.ResultPath
		}
		out, err := setResult(input, path, errObj)
		if err != nil {
			return "", nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
		return c.Next, out, nil
	}
	return "", nil, nil
}

func (r *Runner) state(ex *execution, name string, st *State, input any, item *contextObject) (any, error) {
	switch st.Type {
	case "Fail":
		return nil, &StateError{Name: st.Error, Cause: st.Cause}
	case "Pass":
		if st.Parameters == nil {
			return r.output(st, input, input)
		}
		res, err := applyParameters(st.Parameters, input, item, nil)
		if err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
		return r.output(st, input, res)
	case "Task":
		res, err := r.task(ex, name, st, input, item)
		if err != nil {
			return nil, err
		}
		return r.output(st, input, res)
	case "Map":
		res, err := r.mapState(ex, name, st, input)
		if err != nil {
			return nil, err
		}
		return r.output(st, input, res)
	}
	return nil, fmt.Errorf("state %s: unsupported type %s", name, st.Type)
}

func (r *Runner) output(st *State, input, result any) (any, error) {
	out := input
	switch {
	case st.resultPathNull:
	case st.ResultPath == nil:
		out = result
	default:
		var err error
		if out, err = setResult(input, *st.ResultPath, result); err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
	}
	if st.OutputPath != "" {
		v, err := lookup(st.OutputPath, out, nil)
		if err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
		out = v
	}
	return out, nil
}

// task invokes a Lambda stand-in, retrying as the state's Retry rules say.
func (r *Runner) task(ex *execution, name string, st *State, input any, item *contextObject) (any, error) {
	h, timeout, err := r.function(st)
	if err != nil {
		return nil, err
	}
	params, err := applyParameters(st.Parameters, input, item, nil)
	if err != nil {
		return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
	}
	if err := r.checkSize("the input of state "+name+" after Parameters", params); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(params.(map[string]any)["Payload"])
	if err != nil {
		return nil, err
	}
	retries := make([]int, len(st.Retry))
	for {
		out, err := r.invoke(ex, h, timeout, payload)
		if err == nil {
			var res any
			if len(out) > 0 {
				if err := json.Unmarshal(out, &res); err != nil {
					return nil, &StateError{Name: "States.Runtime", Cause: "function output is not JSON: " + err.Error()}
				}
			}
			result := map[string]any{"Payload": res, "StatusCode": 200}
			if err := r.checkSize("the result of state "+name, result); err != nil {
				return nil, err
			}
			return result, nil
		}
		if ex.invoke.Err() != nil {
			return nil, ex.invoke.Err()
		}
		if ex.flow.Err() != nil {
			return nil, ex.flow.Err() // a stopped execution retries nothing
		}
		se := &StateError{Name: ErrorName(err), Cause: err.Error()}
		i := retrierFor(st.Retry, se.Name)
		if i < 0 || retries[i] >= st.Retry[i].Attempts() {
			return nil, se
		}
		if err := r.opts.Sleep(ex.flow, r.delay(st.Retry[i], retries[i])); err != nil {
			return nil, err
		}
		retries[i]++
	}
}

// invoke calls h as Lambda would: with a context whose deadline is the
// function's timeout, failing with Sandbox.Timedout (the error Lambda
// reports for a function that timed out) when h has not returned by then.
// Lambda would kill it; in process it keeps running, its context
// cancelled, so whatever it still writes arrives late, as after a crash.
func (r *Runner) invoke(ex *execution, h Handler, timeout time.Duration, payload json.RawMessage) (json.RawMessage, error) {
	ctx := ex.invoke
	ictx, cancel := context.WithTimeout(ctx, timeout)
	type answer struct {
		out json.RawMessage
		err error
	}
	done := make(chan answer, 1)
	r.stray.Add(1)
	ex.inFlight.Add(1)
	go func() {
		defer r.stray.Done()
		defer ex.inFlight.Done()
		defer cancel()
		out, err := h(ictx, payload)
		done <- answer{out, err}
	}()
	select {
	case a := <-done:
		return a.out, a.err
	case <-ictx.Done():
	}
	select {
	case a := <-done: // it returned just as time ran out
		return a.out, a.err
	default:
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, &StateError{Name: "Sandbox.Timedout", Cause: fmt.Sprintf("Task timed out after %.2f seconds", timeout.Seconds())}
}

func retrierFor(rules []Retrier, name string) int {
	for i, rule := range rules {
		if matches(rule.ErrorEquals, name) {
			return i
		}
	}
	return -1
}

// delay is IntervalSeconds * BackoffRate^retry, capped by MaxDelaySeconds, with FULL jitter.
func (r *Runner) delay(rule Retrier, retry int) time.Duration {
	secs := rule.Interval() * math.Pow(rule.Backoff(), float64(retry))
	if rule.MaxDelaySeconds > 0 && secs > rule.MaxDelaySeconds {
		secs = rule.MaxDelaySeconds
	}
	if rule.JitterStrategy == "FULL" {
		secs *= r.opts.Jitter()
	}
	return time.Duration(secs * float64(time.Second))
}

// childResult is one child execution's end, as a ResultWriter exports it.
type childResult struct {
	Input  string `json:"Input"`
	Output string `json:"Output,omitempty"`
	Status string `json:"Status"`
	Error  string `json:"Error,omitempty"`
	Cause  string `json:"Cause,omitempty"`
}

// mapState runs a Distributed Map. Past its tolerated failures it fails at
// once: it starts no more children and stops the running ones' executions
// (no further retries or states), but their Lambda invocations already
// under way run to their end, as in the cloud.
func (r *Runner) mapState(ex *execution, name string, st *State, input any) (any, error) {
	items, err := r.items(ex.flow, st, input)
	if err != nil {
		return nil, err
	}
	children, err := batch(st, input, items)
	if err != nil {
		return nil, err
	}
	limit := st.MaxConcurrency
	if st.MaxConcurrencyPath != "" {
		v, err := lookup(st.MaxConcurrencyPath, input, nil)
		if err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
		f, ok := v.(float64)
		if !ok || f < 0 || f != math.Trunc(f) {
			return nil, &StateError{Name: "States.Runtime", Cause: fmt.Sprintf("%s is not a whole number: %v", st.MaxConcurrencyPath, v)}
		}
		limit = int(f)
	}
	if limit <= 0 || limit > len(children) {
		limit = max(len(children), 1)
	}

	stop, stopChildren := context.WithCancel(ex.flow)
	defer stopChildren()
	var (
		mu          sync.Mutex
		done, fails int // items, not children
		firstErr    *StateError
		decided     bool // the Map failed: later endings are not counted
		failed      = make(chan struct{})
		running     sync.WaitGroup
		exported    = make([]childResult, len(children))
	)
	results := make([]any, len(children))
	tolerated := st.ToleratedFailurePercentage
	sem := make(chan struct{}, limit)
launch:
	for i, c := range children {
		select {
		case sem <- struct{}{}:
		case <-stop.Done():
			break launch
		}
		if stop.Err() != nil {
			break
		}
		running.Add(1)
		r.stray.Add(1)
		ex.inFlight.Add(1)
		go func(i int, c mapChild) {
			defer r.stray.Done()
			defer ex.inFlight.Done()
			defer running.Done()
			defer func() { <-sem }()
			out, err := r.item(&execution{flow: stop, invoke: ex.invoke, inFlight: ex.inFlight}, st, i, c.input)
			mu.Lock()
			defer mu.Unlock()
			if decided {
				return
			}
			done += c.items
			exported[i].Input = marshalString(c.input)
			if err != nil {
				fails += c.items
				var se *StateError
				if !errors.As(err, &se) {
					se = &StateError{Name: ErrorName(err), Cause: err.Error()}
				}
				if firstErr == nil {
					firstErr = se
				}
				exported[i].Status, exported[i].Error, exported[i].Cause = "FAILED", se.Name, se.Cause
				if float64(fails)*100 > tolerated*float64(len(items)) {
					decided = true
					stopChildren()
					close(failed)
				}
			} else {
				results[i] = out
				exported[i].Status, exported[i].Output = "SUCCEEDED", marshalString(out)
			}
			if r.opts.Progress != nil {
				r.opts.Progress(Progress{State: name, Done: done, Failed: fails, Total: len(items)})
			}
		}(i, c)
	}
	allDone := make(chan struct{})
	go func() { running.Wait(); close(allDone) }()
	select {
	case <-failed:
	case <-allDone:
	}
	if err := ex.flow.Err(); err != nil {
		<-allDone // cancelled: the invocations see it and return
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if decided {
		return nil, &StateError{
			Name:  "States.ExceedToleratedFailureThreshold",
			Cause: fmt.Sprintf("%d of %d items failed; first: %s", fails, len(items), firstErr.Error()),
		}
	}
	var result any = results
	if st.ResultWriter != nil {
		if result, err = r.writeResults(ex, name, st, input, exported); err != nil {
			return nil, err
		}
	}
	if err := r.checkSize("the result of Map state "+name, result); err != nil {
		return nil, err
	}
	return result, nil
}

// mapChild is the input of one child execution of a Map and how many of the
// Map's items it processes.
type mapChild struct {
	input any
	items int
}

// batch turns a Map's items into its children's inputs: one child per
// item, or with an ItemBatcher one per group of consecutive items, its
// input {"Items": [...], "BatchInput": {...}}.
func batch(st *State, input any, items []any) ([]mapChild, error) {
	b := st.ItemBatcher
	if b == nil {
		children := make([]mapChild, len(items))
		for i, it := range items {
			children[i] = mapChild{input: it, items: 1}
		}
		return children, nil
	}
	size := b.MaxItemsPerBatch
	if b.MaxItemsPerBatchPath != "" {
		v, err := lookup(b.MaxItemsPerBatchPath, input, nil)
		if err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: "ItemBatcher: " + err.Error()}
		}
		f, ok := v.(float64)
		if !ok || f < 1 || f != math.Trunc(f) || f > math.MaxInt32 {
			return nil, &StateError{Name: "States.Runtime",
				Cause: fmt.Sprintf("ItemBatcher: %s is not a positive whole number: %v", b.MaxItemsPerBatchPath, v)}
		}
		size = int(f)
	}
	var batchInput any
	if b.BatchInput != nil {
		var err error
		if batchInput, err = applyParameters(b.BatchInput, input, nil, nil); err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: "ItemBatcher.BatchInput: " + err.Error()}
		}
	}
	var children []mapChild
	for start := 0; start < len(items); start += size {
		group := items[start:min(start+size, len(items))]
		in := map[string]any{"Items": group}
		if batchInput != nil {
			in["BatchInput"] = batchInput
		}
		children = append(children, mapChild{input: in, items: len(group)})
	}
	return children, nil
}

func marshalString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// writeResults exports the children's ends as a ResultWriter does, under
// Prefix/<map run id>/, and returns the Map's result: where they went.
func (r *Runner) writeResults(ex *execution, name string, st *State, input any, ends []childResult) (any, error) {
	p, err := applyParameters(st.ResultWriter.Parameters, input, nil, nil)
	if err != nil {
		return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
	}
	params, _ := p.(map[string]any)
	bucket, _ := params["Bucket"].(string)
	prefix, _ := params["Prefix"].(string)
	var id [16]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	runID := hex.EncodeToString(id[:])
	dir := prefix
	if dir != "" && dir[len(dir)-1] != '/' {
		dir += "/"
	}
	dir += runID + "/"
	var succeeded, failed []childResult
	for _, e := range ends {
		if e.Status == "FAILED" {
			failed = append(failed, e)
		} else {
			succeeded = append(succeeded, e)
		}
	}
	files := map[string][]any{}
	write := func(status string, list []childResult) error {
		if len(list) == 0 {
			return nil
		}
		key := dir + status + "_0.json"
		body, err := json.Marshal(list)
		if err != nil {
			return err
		}
		if err := r.opts.Results(ex.invoke, key, body); err != nil {
			return err
		}
		files[status] = append(files[status], map[string]any{"Key": key, "Size": len(body)})
		return nil
	}
	if err := errors.Join(write("SUCCEEDED", succeeded), write("FAILED", failed)); err != nil {
		return nil, &StateError{Name: "States.ResultWriterFailed", Cause: err.Error()}
	}
	mapRunArn := "arn:aws:states:local:000000000000:mapRun:local/" + name + ":" + runID
	manifest, err := json.Marshal(map[string]any{"DestinationBucket": bucket, "MapRunArn": mapRunArn,
		"ResultFiles": map[string]any{"FAILED": orEmpty(files["FAILED"]), "PENDING": []any{}, "SUCCEEDED": orEmpty(files["SUCCEEDED"])}})
	if err != nil {
		return nil, err
	}
	if err := r.opts.Results(ex.invoke, dir+"manifest.json", manifest); err != nil {
		return nil, &StateError{Name: "States.ResultWriterFailed", Cause: err.Error()}
	}
	return map[string]any{"MapRunArn": mapRunArn,
		"ResultWriterDetails": map[string]any{"Bucket": bucket, "Key": dir + "manifest.json"}}, nil
}

func orEmpty(l []any) []any {
	if l == nil {
		return []any{}
	}
	return l
}

func (r *Runner) items(ctx context.Context, st *State, input any) ([]any, error) {
	if st.ItemReader == nil {
		path := st.ItemsPath
		if path == "" {
			path = "$"
		}
		v, err := lookup(path, input, nil)
		if err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
		arr, ok := v.([]any)
		if !ok {
			return nil, &StateError{Name: "States.Runtime", Cause: "Map input is not an array"}
		}
		return arr, nil
	}
	p, err := applyParameters(st.ItemReader.Parameters, input, nil, nil)
	if err != nil {
		return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
	}
	key, _ := p.(map[string]any)["Key"].(string)
	items, err := r.opts.Items(ctx, key)
	if err != nil {
		return nil, &StateError{Name: "States.ItemReaderFailed", Cause: err.Error()}
	}
	return items, nil
}

// item runs one child execution on in and returns its output.
func (r *Runner) item(ex *execution, st *State, i int, in any) (any, error) {
	co := &contextObject{}
	co.Map.Item.Index = i
	co.Map.Item.Value = in
	// Each child is an execution: its input has the execution quota.
	if err := r.checkSize("a child execution's input", in); err != nil {
		return nil, err
	}
	return r.run(ex, st.ItemProcessor, in, co)
}

// memoryNames keeps execution names for the life of the process.
type memoryNames struct {
	mu   sync.Mutex
	used map[string]bool
}

func (m *memoryNames) Claim(_ context.Context, name string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.used[name] {
		return false, nil
	}
	m.used[name] = true
	return true, nil
}

func (m *memoryNames) Closed(context.Context, string) error { return nil }
