// Package runner executes segpilot's Step Functions definition in process, for
// local mode and tests. Nothing available offline executes a Distributed Map,
// so this small interpreter runs the subset of Amazon States Language the
// definition uses (Task, Map, Pass, Fail; Retry, Catch; Parameters,
// ItemSelector, ResultPath, OutputPath) and takes every number and error
// name from the same file the cloud uses, so the two cannot drift.
package runner

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Definition is a parsed state machine (or a Map's ItemProcessor).
type Definition struct {
	Comment string            `json:"Comment"`
	StartAt string            `json:"StartAt"`
	States  map[string]*State `json:"States"`
}

// State is one ASL state; only the fields segpilot's definition uses.
type State struct {
	Type       string          `json:"Type"`
	Next       string          `json:"Next"`
	End        bool            `json:"End"`
	Resource   string          `json:"Resource"`
	Parameters json.RawMessage `json:"Parameters"`
	ResultPath *string         `json:"ResultPath"` // nil: default "$"; pointer to "" never happens (null decodes to nil, see resultPathSet)
	OutputPath string          `json:"OutputPath"`
	Retry      []Retrier       `json:"Retry"`
	Catch      []Catcher       `json:"Catch"`

	// Map
	ItemReader                 *ItemReader     `json:"ItemReader"`
	ItemSelector               json.RawMessage `json:"ItemSelector"`
	ItemProcessor              *Definition     `json:"ItemProcessor"`
	MaxConcurrency             int             `json:"MaxConcurrency"`
	MaxConcurrencyPath         string          `json:"MaxConcurrencyPath"`
	ToleratedFailurePercentage float64         `json:"ToleratedFailurePercentage"`

	// Fail
	Error string `json:"Error"`
	Cause string `json:"Cause"`

	resultPathNull bool
}

// Retrier is one ASL Retry rule.
type Retrier struct {
	ErrorEquals     []string `json:"ErrorEquals"`
	IntervalSeconds *float64 `json:"IntervalSeconds"`
	BackoffRate     *float64 `json:"BackoffRate"`
	MaxAttempts     *int     `json:"MaxAttempts"`
	MaxDelaySeconds float64  `json:"MaxDelaySeconds"`
	JitterStrategy  string   `json:"JitterStrategy"`
}

// Interval, Backoff and Attempts apply the ASL defaults (1 s, 2.0, 3 retries).
func (r Retrier) Interval() float64 { return deref(r.IntervalSeconds, 1) }
func (r Retrier) Backoff() float64  { return deref(r.BackoffRate, 2) }
func (r Retrier) Attempts() int     { return deref(r.MaxAttempts, 3) }

// Catcher is one ASL Catch rule.
type Catcher struct {
	ErrorEquals []string `json:"ErrorEquals"`
	ResultPath  *string  `json:"ResultPath"`
	Next        string   `json:"Next"`
}

// ItemReader names where a Distributed Map reads its items.
type ItemReader struct {
	Resource     string          `json:"Resource"`
	ReaderConfig json.RawMessage `json:"ReaderConfig"`
	Parameters   json.RawMessage `json:"Parameters"`
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Parse reads an ASL document and checks it only uses what the runner implements.
func Parse(data []byte) (*Definition, error) {
	var def Definition
	if err := json.Unmarshal(data, &def); err != nil {
		return nil, fmt.Errorf("parsing state machine: %w", err)
	}
	// ResultPath: null means "discard the result", which a *string cannot tell from absent.
	var raw struct {
		States map[string]json.RawMessage `json:"States"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parsing state machine: %w", err)
	}
	markNullResultPaths(&def, raw.States)
	if err := def.check("States"); err != nil {
		return nil, err
	}
	return &def, nil
}

func markNullResultPaths(def *Definition, raw map[string]json.RawMessage) {
	for name, st := range def.States {
		var fields map[string]json.RawMessage
		if json.Unmarshal(raw[name], &fields) != nil {
			continue
		}
		if v, ok := fields["ResultPath"]; ok && string(v) == "null" {
			st.resultPathNull = true
		}
		if st.ItemProcessor != nil {
			var proc struct {
				States map[string]json.RawMessage `json:"States"`
			}
			if json.Unmarshal(fields["ItemProcessor"], &proc) == nil {
				markNullResultPaths(st.ItemProcessor, proc.States)
			}
		}
	}
}

func (d *Definition) check(where string) error {
	if _, ok := d.States[d.StartAt]; !ok {
		return fmt.Errorf("state machine: StartAt %q is not a state", d.StartAt)
	}
	for name, st := range d.States {
		at := where + "." + name
		switch st.Type {
		case "Task", "Pass", "Map":
			if !st.End && st.Next == "" {
				return fmt.Errorf("state machine: %s has neither Next nor End", at)
			}
		case "Fail":
		default:
			return fmt.Errorf("state machine: %s: state type %q is not supported by the local runner", at, st.Type)
		}
		if st.Next != "" {
			if _, ok := d.States[st.Next]; !ok {
				return fmt.Errorf("state machine: %s: Next %q is not a state", at, st.Next)
			}
		}
		for _, c := range st.Catch {
			if _, ok := d.States[c.Next]; !ok {
				return fmt.Errorf("state machine: %s: Catch Next %q is not a state", at, c.Next)
			}
		}
		if st.Type == "Map" {
			if st.ItemProcessor == nil {
				return fmt.Errorf("state machine: %s: Map without ItemProcessor", at)
			}
			if err := st.ItemProcessor.check(at + ".ItemProcessor.States"); err != nil {
				return err
			}
		}
	}
	return nil
}

// matches reports whether an error name is covered by ErrorEquals, with the
// ASL wildcards: States.ALL matches anything; States.TaskFailed matches any
// error but States.Timeout.
func matches(errorEquals []string, name string) bool {
	for _, e := range errorEquals {
		switch {
		case e == name, e == "States.ALL":
			return true
		case e == "States.TaskFailed" && name != "States.Timeout" && !strings.HasPrefix(name, "States.Runtime"):
			return true
		}
	}
	return false
}

// Placeholder returns NAME for a "${NAME}" DefinitionSubstitutions value.
func Placeholder(s string) (string, bool) {
	if strings.HasPrefix(s, "${") && strings.HasSuffix(s, "}") {
		return s[2 : len(s)-1], true
	}
	return "", false
}
