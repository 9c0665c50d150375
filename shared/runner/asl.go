// Package runner executes segpilot's Step Functions definition in process, for
// local mode and tests. Nothing available offline executes a Distributed Map,
// so this small interpreter runs the subset of Amazon States Language the
// definition uses (Task, Map, Pass, Fail; Retry, Catch; Parameters,
// ItemReader, ItemBatcher, ResultWriter, ResultPath, OutputPath) and takes
// every number and error name from the same file the cloud uses, so the two
// cannot drift. It refuses a field it does not implement rather than ignore
// what the cloud would apply, and it is as strict as the cloud where the
// cloud is strict: the payload quota, uncatchable errors, Lambda timeouts
// (from template.yaml), a failed Map that leaves its running children
// running, and execution names used once.
package runner

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
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
	ResultPath *string         `json:"ResultPath"` // nil: default "$"; null is recorded in resultPathNull
	OutputPath string          `json:"OutputPath"`
	Retry      []Retrier       `json:"Retry"`
	Catch      []Catcher       `json:"Catch"`

	// Map
	ItemReader                 *ItemReader   `json:"ItemReader"`
	ItemsPath                  string        `json:"ItemsPath"`
	ItemBatcher                *ItemBatcher  `json:"ItemBatcher"`
	ItemProcessor              *Definition   `json:"ItemProcessor"`
	ResultWriter               *ResultWriter `json:"ResultWriter"`
	MaxConcurrency             int           `json:"MaxConcurrency"`
	MaxConcurrencyPath         string        `json:"MaxConcurrencyPath"`
	ToleratedFailurePercentage float64       `json:"ToleratedFailurePercentage"`

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

// ItemBatcher makes each child of a Distributed Map process a group of
// consecutive items: its input is {"Items": [...], "BatchInput": {...}},
// BatchInput built from the Map state's input as Parameters are. Of the
// group limits only the item count is implemented (MaxItemsPerBatch, or
// MaxItemsPerBatchPath into the Map state's input).
type ItemBatcher struct {
	MaxItemsPerBatch     int             `json:"MaxItemsPerBatch"`
	MaxItemsPerBatchPath string          `json:"MaxItemsPerBatchPath"`
	BatchInput           json.RawMessage `json:"BatchInput"`
}

// ResultWriter names where a Distributed Map writes its children's
// results; the Map's own result is then only where they went.
type ResultWriter struct {
	Resource   string          `json:"Resource"`
	Parameters json.RawMessage `json:"Parameters"`
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// The fields the runner implements, by state type. Any other field is
// refused: Step Functions would apply it and the runner would not.
var (
	commonFields = []string{"Type", "Comment", "Next", "End"}
	stateFields  = map[string][]string{
		"Task": {"Resource", "Parameters", "ResultPath", "OutputPath", "Retry", "Catch"},
		"Pass": {"Parameters", "ResultPath", "OutputPath"},
		"Map": {"ItemReader", "ItemsPath", "ItemBatcher", "ItemProcessor", "ResultWriter", "MaxConcurrency",
			"MaxConcurrencyPath", "ToleratedFailurePercentage", "ResultPath", "OutputPath", "Retry", "Catch"},
		"Fail": {"Error", "Cause"},
	}
	definitionFields   = []string{"Comment", "StartAt", "States"}
	processorFields    = []string{"ProcessorConfig", "StartAt", "States"}
	retrierFields      = []string{"ErrorEquals", "IntervalSeconds", "BackoffRate", "MaxAttempts", "MaxDelaySeconds", "JitterStrategy"}
	catcherFields      = []string{"ErrorEquals", "ResultPath", "Next"}
	itemReaderFields   = []string{"Resource", "ReaderConfig", "Parameters"}
	resultWriterFields = []string{"Resource", "Parameters"}
	itemBatcherFields  = []string{"MaxItemsPerBatch", "MaxItemsPerBatchPath", "BatchInput"}
	readerConfigFields = []string{"InputType"}
	processorCfgFields = []string{"Mode", "ExecutionType"}
)

// Parse reads an ASL document and checks it only uses what the runner implements.
func Parse(data []byte) (*Definition, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parsing state machine: %w", err)
	}
	if err := checkFields("state machine", raw, definitionFields); err != nil {
		return nil, err
	}
	var def Definition
	if err := json.Unmarshal(data, &def); err != nil {
		return nil, fmt.Errorf("parsing state machine: %w", err)
	}
	var states map[string]json.RawMessage
	if err := json.Unmarshal(raw["States"], &states); err != nil {
		return nil, fmt.Errorf("parsing state machine: %w", err)
	}
	if err := inspect(&def, states, "States"); err != nil {
		return nil, err
	}
	if err := def.check("States"); err != nil {
		return nil, err
	}
	return &def, nil
}

// checkFields refuses any key of obj not in allowed.
func checkFields(where string, obj map[string]json.RawMessage, allowed []string) error {
	var unknown []string
	for k := range obj {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("state machine: %s: field %s is not supported by the local runner (it would ignore what Step Functions applies)",
			where, strings.Join(unknown, ", "))
	}
	return nil
}

func checkObject(where string, raw json.RawMessage, allowed []string) error {
	if raw == nil {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("state machine: %s: %w", where, err)
	}
	return checkFields(where, obj, allowed)
}

// inspect checks every state's fields against what the runner implements
// and records "ResultPath": null, which a *string cannot tell from absent.
func inspect(def *Definition, raw map[string]json.RawMessage, where string) error {
	for name, st := range def.States {
		at := where + "." + name
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw[name], &fields); err != nil {
			return fmt.Errorf("state machine: %s: %w", at, err)
		}
		allowed, ok := stateFields[st.Type]
		if !ok {
			return fmt.Errorf("state machine: %s: state type %q is not supported by the local runner", at, st.Type)
		}
		if err := checkFields(at, fields, append(slices.Clone(commonFields), allowed...)); err != nil {
			return err
		}
		var rules []json.RawMessage
		if fields["Retry"] != nil {
			if err := json.Unmarshal(fields["Retry"], &rules); err != nil {
				return fmt.Errorf("state machine: %s.Retry: %w", at, err)
			}
			for i, rule := range rules {
				if err := checkObject(fmt.Sprintf("%s.Retry[%d]", at, i), rule, retrierFields); err != nil {
					return err
				}
			}
		}
		rules = nil
		if fields["Catch"] != nil {
			if err := json.Unmarshal(fields["Catch"], &rules); err != nil {
				return fmt.Errorf("state machine: %s.Catch: %w", at, err)
			}
			for i, rule := range rules {
				if err := checkObject(fmt.Sprintf("%s.Catch[%d]", at, i), rule, catcherFields); err != nil {
					return err
				}
			}
		}
		if v, ok := fields["ResultPath"]; ok && string(v) == "null" {
			st.resultPathNull = true
		}
		if st.ItemReader != nil {
			if err := checkObject(at+".ItemReader", fields["ItemReader"], itemReaderFields); err != nil {
				return err
			}
			if err := checkObject(at+".ItemReader.ReaderConfig", st.ItemReader.ReaderConfig, readerConfigFields); err != nil {
				return err
			}
		}
		if st.ResultWriter != nil {
			if err := checkObject(at+".ResultWriter", fields["ResultWriter"], resultWriterFields); err != nil {
				return err
			}
		}
		if st.ItemBatcher != nil {
			if err := checkObject(at+".ItemBatcher", fields["ItemBatcher"], itemBatcherFields); err != nil {
				return err
			}
		}
		if st.ItemProcessor != nil {
			var proc map[string]json.RawMessage
			if err := json.Unmarshal(fields["ItemProcessor"], &proc); err != nil {
				return fmt.Errorf("state machine: %s.ItemProcessor: %w", at, err)
			}
			if err := checkFields(at+".ItemProcessor", proc, processorFields); err != nil {
				return err
			}
			if err := checkObject(at+".ItemProcessor.ProcessorConfig", proc["ProcessorConfig"], processorCfgFields); err != nil {
				return err
			}
			var states map[string]json.RawMessage
			if err := json.Unmarshal(proc["States"], &states); err != nil {
				return fmt.Errorf("state machine: %s.ItemProcessor: %w", at, err)
			}
			if err := inspect(st.ItemProcessor, states, at+".ItemProcessor.States"); err != nil {
				return err
			}
		}
	}
	return nil
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
		if st.Type == "Task" {
			if _, ok := integration(st.Resource, "lambda:invoke"); !ok {
				return fmt.Errorf("state machine: %s: resource %q is not supported by the local runner", at, st.Resource)
			}
		}
		if st.ItemReader != nil {
			if _, ok := integration(st.ItemReader.Resource, "s3:getObject"); !ok {
				return fmt.Errorf("state machine: %s: ItemReader resource %q is not supported by the local runner", at, st.ItemReader.Resource)
			}
			var cfg struct{ InputType string }
			if err := json.Unmarshal(st.ItemReader.ReaderConfig, &cfg); err != nil || cfg.InputType != "JSON" {
				return fmt.Errorf("state machine: %s: only an ItemReader of InputType JSON is supported by the local runner", at)
			}
		}
		if st.ResultWriter != nil {
			if _, ok := integration(st.ResultWriter.Resource, "s3:putObject"); !ok {
				return fmt.Errorf("state machine: %s: ResultWriter resource %q is not supported by the local runner", at, st.ResultWriter.Resource)
			}
		}
		if b := st.ItemBatcher; b != nil {
			if (b.MaxItemsPerBatch != 0) == (b.MaxItemsPerBatchPath != "") {
				return fmt.Errorf("state machine: %s.ItemBatcher: give one of MaxItemsPerBatch and MaxItemsPerBatchPath", at)
			}
			if b.MaxItemsPerBatch < 0 {
				return fmt.Errorf("state machine: %s.ItemBatcher: MaxItemsPerBatch must be a positive integer", at)
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

// integration reports whether resource is the optimized service
// integration arn:<partition>:states:::<action>, where the partition is a
// real one or the template's ${Partition} substitution.
func integration(resource, action string) (partition string, ok bool) {
	rest, ok := strings.CutPrefix(resource, "arn:")
	if !ok {
		return "", false
	}
	partition, rest, ok = strings.Cut(rest, ":")
	if !ok || rest != "states:::"+action {
		return "", false
	}
	switch partition {
	case "aws", "aws-cn", "aws-us-gov", "${Partition}":
		return partition, true
	}
	return "", false
}

// Errors no Retry or Catch handles: Step Functions fails the execution.
// (States.ALL "cannot catch the States.DataLimitExceeded terminal error or
// Runtime error types", Step Functions developer guide, error handling.)
func terminal(name string) bool {
	return name == "States.DataLimitExceeded" || name == "States.Runtime"
}

// matches reports whether an error name is covered by ErrorEquals, with the
// ASL wildcards: States.ALL matches anything; States.TaskFailed matches any
// error but States.Timeout. Neither matches the terminal errors.
func matches(errorEquals []string, name string) bool {
	if terminal(name) {
		return false
	}
	for _, e := range errorEquals {
		switch {
		case e == name, e == "States.ALL":
			return true
		case e == "States.TaskFailed" && name != "States.Timeout":
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
