package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"

	"github.com/segpilot/segpilot/shared/clock"
)

// Handler is an in-process stand-in for a Lambda function.
type Handler func(ctx context.Context, payload json.RawMessage) (json.RawMessage, error)

// ItemLoader reads a Distributed Map's items (a JSON array) from the bucket.
type ItemLoader func(ctx context.Context, key string) ([]any, error)

// Progress is reported after each Map item finishes.
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
	Items     ItemLoader
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
	def  *Definition
	opts Options

	mu      sync.Mutex
	started map[string]bool
}

// New parses the definition and checks every function it names is wired.
func New(opts Options) (*Runner, error) {
	def, err := Parse(opts.Definition)
	if err != nil {
		return nil, err
	}
	if opts.Sleep == nil {
		opts.Sleep = clock.Sleep
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	r := &Runner{def: def, opts: opts, started: map[string]bool{}}
	if err := r.checkFunctions(def); err != nil {
		return nil, err
	}
	return r, nil
}

// Definition exposes the parsed definition (tests read its numbers).
func (r *Runner) Definition() *Definition { return r.def }

func (r *Runner) checkFunctions(def *Definition) error {
	for name, st := range def.States {
		if st.Type == "Task" {
			if _, err := r.function(st); err != nil {
				return fmt.Errorf("state %s: %w", name, err)
			}
		}
		if st.ItemProcessor != nil {
			if err := r.checkFunctions(st.ItemProcessor); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Runner) function(st *State) (Handler, error) {
	if st.Resource != "arn:aws:states:::lambda:invoke" {
		return nil, fmt.Errorf("resource %q is not supported by the local runner", st.Resource)
	}
	var p struct {
		FunctionName string `json:"FunctionName"`
	}
	if err := json.Unmarshal(st.Parameters, &p); err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	name, ok := Placeholder(p.FunctionName)
	if !ok {
		return nil, fmt.Errorf("FunctionName %q is not a ${...} substitution", p.FunctionName)
	}
	h, ok := r.opts.Functions[name]
	if !ok {
		return nil, fmt.Errorf("no local handler for %s", name)
	}
	return h, nil
}

// StartRun executes the state machine synchronously, like StartExecution
// followed by waiting. A name already started in this process is not run
// again (Step Functions' ExecutionAlreadyExists) and reports started=false.
func (r *Runner) StartRun(ctx context.Context, name string, input []byte) (bool, error) {
	r.mu.Lock()
	if r.started[name] {
		r.mu.Unlock()
		return false, nil
	}
	r.started[name] = true
	r.mu.Unlock()
	_, err := r.Execute(ctx, input)
	return true, err
}

// Execute runs the definition on input and returns its output.
func (r *Runner) Execute(ctx context.Context, input []byte) (json.RawMessage, error) {
	var in any
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, fmt.Errorf("execution input: %w", err)
	}
	out, err := r.run(ctx, r.def, in, nil)
	if err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

func (r *Runner) run(ctx context.Context, def *Definition, input any, item *contextObject) (any, error) {
	name := def.StartAt
	for {
		st := def.States[name]
		out, err := r.state(ctx, name, st, input, item)
		if err != nil {
			var se *StateError
			if !errors.As(err, &se) || ctx.Err() != nil {
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
		return c.Next, out, err
	}
	return "", nil, nil
}

func (r *Runner) state(ctx context.Context, name string, st *State, input any, item *contextObject) (any, error) {
	switch st.Type {
	case "Fail":
		return nil, &StateError{Name: st.Error, Cause: st.Cause}
	case "Pass":
		if st.Parameters == nil {
			return input, nil
		}
		res, err := applyParameters(st.Parameters, input, item, nil)
		if err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
		return r.output(st, input, res)
	case "Task":
		res, err := r.task(ctx, st, input, item)
		if err != nil {
			return nil, err
		}
		return r.output(st, input, res)
	case "Map":
		res, err := r.mapState(ctx, name, st, input)
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
func (r *Runner) task(ctx context.Context, st *State, input any, item *contextObject) (any, error) {
	h, err := r.function(st)
	if err != nil {
		return nil, err
	}
	params, err := applyParameters(st.Parameters, input, item, nil)
	if err != nil {
		return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
	}
	payload, err := json.Marshal(params.(map[string]any)["Payload"])
	if err != nil {
		return nil, err
	}
	retries := make([]int, len(st.Retry))
	for {
		out, err := h(ctx, payload)
		if err == nil {
			var res any
			if len(out) > 0 {
				if err := json.Unmarshal(out, &res); err != nil {
					return nil, &StateError{Name: "States.Runtime", Cause: "function output is not JSON: " + err.Error()}
				}
			}
			return map[string]any{"Payload": res, "StatusCode": 200}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		se := &StateError{Name: ErrorName(err), Cause: err.Error()}
		i := retrierFor(st.Retry, se.Name)
		if i < 0 || retries[i] >= st.Retry[i].Attempts() {
			return nil, se
		}
		if err := r.opts.Sleep(ctx, r.delay(st.Retry[i], retries[i])); err != nil {
			return nil, err
		}
		retries[i]++
	}
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

func (r *Runner) mapState(ctx context.Context, name string, st *State, input any) (any, error) {
	items, err := r.items(ctx, st, input)
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
	if limit <= 0 || limit > len(items) {
		limit = max(len(items), 1)
	}

	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]any, len(items))
	var (
		mu          sync.Mutex
		done, fails int
		firstErr    *StateError
		wg          sync.WaitGroup
	)
	sem := make(chan struct{}, limit)
	tolerated := st.ToleratedFailurePercentage
launch:
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-mctx.Done():
			break launch
		}
		wg.Add(1)
		go func(i int, it any) {
			defer wg.Done()
			defer func() { <-sem }()
			out, err := r.item(mctx, st, input, i, it)
			mu.Lock()
			defer mu.Unlock()
			done++
			if err != nil {
				fails++
				var se *StateError
				if !errors.As(err, &se) {
					se = &StateError{Name: ErrorName(err), Cause: err.Error()}
				}
				if firstErr == nil {
					firstErr = se
				}
				if float64(fails)*100 > tolerated*float64(len(items)) {
					cancel() // past the threshold the Map fails: stop the rest
				}
			} else {
				results[i] = out
			}
			if r.opts.Progress != nil {
				r.opts.Progress(Progress{State: name, Done: done, Failed: fails, Total: len(items)})
			}
		}(i, it)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if float64(fails)*100 > tolerated*float64(len(items)) {
		return nil, &StateError{
			Name:  "States.ExceedToleratedFailureThreshold",
			Cause: fmt.Sprintf("%d of %d items failed; first: %s", fails, len(items), firstErr.Error()),
		}
	}
	return results, nil
}

func (r *Runner) items(ctx context.Context, st *State, input any) ([]any, error) {
	if st.ItemReader == nil {
		v, err := lookup("$", input, nil)
		if err != nil {
			return nil, err
		}
		arr, ok := v.([]any)
		if !ok {
			return nil, &StateError{Name: "States.Runtime", Cause: "Map input is not an array"}
		}
		return arr, nil
	}
	if r.opts.Items == nil {
		return nil, errors.New("map has an ItemReader but the runner has no item loader")
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

func (r *Runner) item(ctx context.Context, st *State, input any, i int, it any) (any, error) {
	co := &contextObject{}
	co.Map.Item.Index = i
	co.Map.Item.Value = it
	in := it
	if st.ItemSelector != nil {
		var err error
		if in, err = applyParameters(st.ItemSelector, input, co, nil); err != nil {
			return nil, &StateError{Name: "States.Runtime", Cause: err.Error()}
		}
	}
	return r.run(ctx, st.ItemProcessor, in, co)
}
