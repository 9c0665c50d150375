package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/segpilot/segpilot/shared/runner"
)

// batchedMap is a Distributed Map over $.items whose children each get a
// group of consecutive items, as Step Functions' ItemBatcher passes them:
// {"Items": [...], "BatchInput": {...}}, BatchInput built from the Map
// state's input.
func batchedMap(batcher string) string {
	return `{
  "StartAt": "M",
  "States": {
    "M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "ToleratedFailurePercentage": 0,
          "ItemBatcher": ` + batcher + `,
          "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "T", "States": {
              "T": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": "${F}", "Payload.$": "$"}, "OutputPath": "$.Payload", "End": true}}},
          "ResultPath": null, "End": true}
  }
}`
}

// groupInput is a child's input under an ItemBatcher.
type groupInput struct {
	Items      []int          `json:"Items"`
	BatchInput map[string]any `json:"BatchInput"`
}

func TestItemBatcherGroupsConsecutiveItems(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, batcher string
	}{
		{"MaxItemsPerBatchPath", `{"MaxItemsPerBatchPath": "$.groupSize", "BatchInput": {"run.$": "$.run", "fixed": 7}}`},
		{"MaxItemsPerBatch", `{"MaxItemsPerBatch": 3, "BatchInput": {"run.$": "$.run", "fixed": 7}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu       sync.Mutex
				groups   []groupInput
				progress []runner.Progress
			)
			r := mustNew(t, runner.Options{Definition: []byte(batchedMap(tt.batcher)),
				Functions: map[string]runner.Handler{"F": func(_ context.Context, p json.RawMessage) (json.RawMessage, error) {
					var g groupInput
					if err := json.Unmarshal(p, &g); err != nil {
						return nil, err
					}
					var raw map[string]json.RawMessage
					if err := json.Unmarshal(p, &raw); err != nil || len(raw) != 2 {
						return nil, fmt.Errorf("child input %s: want exactly Items and BatchInput", p)
					}
					mu.Lock()
					groups = append(groups, g)
					mu.Unlock()
					return json.RawMessage(`{}`), nil
				}},
				Progress: func(p runner.Progress) {
					mu.Lock()
					progress = append(progress, p)
					mu.Unlock()
				},
			})
			in := `{"run": "r-1", "groupSize": 3, "items": [0,1,2,3,4,5,6,7,8,9]}`
			if _, err := r.Execute(context.Background(), []byte(in)); err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(groups, func(a, b groupInput) int { return a.Items[0] - b.Items[0] })
			want := [][]int{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}, {9}}
			if len(groups) != len(want) {
				t.Fatalf("%d children: %+v; want %d groups of 3 consecutive items", len(groups), groups, len(want))
			}
			for i, g := range groups {
				if !slices.Equal(g.Items, want[i]) || g.BatchInput["run"] != "r-1" || g.BatchInput["fixed"] != 7.0 {
					t.Errorf("child %d got %+v; want Items %v and BatchInput {run: r-1, fixed: 7}", i, g, want[i])
				}
			}
			last := progress[len(progress)-1]
			if len(progress) != 4 || last.Done != 10 || last.Total != 10 {
				t.Errorf("progress %+v; want 4 reports counting items, ending at 10 of 10", progress)
			}
		})
	}
}

// A MaxItemsPerBatchPath that is not a positive whole number fails the
// state as Step Functions does, with no child started.
func TestItemBatcherPathMustBeAPositiveInteger(t *testing.T) {
	t.Parallel()
	for _, size := range []string{`0`, `2.5`, `"3"`, `-1`} {
		calls := 0
		r := mustNew(t, runner.Options{Definition: []byte(batchedMap(`{"MaxItemsPerBatchPath": "$.groupSize"}`)),
			Functions: map[string]runner.Handler{"F": func(context.Context, json.RawMessage) (json.RawMessage, error) {
				calls++
				return json.RawMessage(`{}`), nil
			}}})
		_, err := r.Execute(context.Background(), []byte(`{"groupSize": `+size+`, "items": [1, 2]}`))
		if se := stateError(t, err); se.Name != "States.Runtime" || calls != 0 {
			t.Errorf("groupSize %s: %s after %d calls; want States.Runtime before any child", size, se.Name, calls)
		}
	}
}

// A group is one child's input: past the payload quota it fails as the
// cloud fails it, however small each item is.
func TestItemBatcherGroupOverQuotaIsNotCaught(t *testing.T) {
	t.Parallel()
	items := make([]string, 300)
	for i := range items {
		items[i] = `"` + strings.Repeat("x", 1000) + `"`
	}
	r := mustNew(t, runner.Options{Definition: []byte(batchedMap(`{"MaxItemsPerBatch": 300}`)),
		Functions: map[string]runner.Handler{"F": func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`{}`), nil
		}}})
	_, err := r.Execute(context.Background(), []byte(`{"items": [`+strings.Join(items, ",")+`]}`))
	if se := stateError(t, err); se.Name != "States.DataLimitExceeded" {
		t.Fatalf("a 300 KB group: %s; want States.DataLimitExceeded", se.Name)
	}
}

func TestItemBatcherFieldsAreChecked(t *testing.T) {
	t.Parallel()
	for _, batcher := range []string{
		`{}`, // no limit
		`{"MaxItemsPerBatch": 3, "MaxItemsPerBatchPath": "$.n"}`,
		`{"MaxItemsPerBatch": -3}`,
		`{"MaxItemsPerBatch": 3, "MaxInputBytesPerBatch": 1024}`, // not implemented
	} {
		if _, err := runner.Parse([]byte(batchedMap(batcher))); err == nil {
			t.Errorf("ItemBatcher %s parsed", batcher)
		}
	}
	// The definition selects nothing out of an item: ItemSelector (whose
	// order beside an ItemBatcher the runner could not promise) is refused.
	withSelector := strings.Replace(batchedMap(`{"MaxItemsPerBatch": 3}`), `"ItemBatcher"`, `"ItemSelector": {"v.$": "$$.Map.Item.Value"}, "ItemBatcher"`, 1)
	if _, err := runner.Parse([]byte(withSelector)); err == nil {
		t.Error("ItemSelector parsed; the runner does not implement it")
	}
}
