package plan_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/segpilot/segpilot/shared/plan"
)

func TestPromoteByRow(t *testing.T) {
	t.Parallel()
	const base = "a@x\t1\nb@x\t1\nc@x\t1\nd@x\t1\n"
	// b changed, c left (mirror), e joined, a and d unchanged.
	const target = "a@x\t1\nb@x\t2\nd@x\t1\ne@x\t2\n"
	tests := []struct {
		name        string
		base        string
		undelivered []string
		want        string
	}{
		{"everything delivered", base, nil, target},
		{"a changed contact not delivered keeps its old hash", base, []string{"b@x"}, "a@x\t1\nb@x\t1\nd@x\t1\ne@x\t2\n"},
		{"a new contact not delivered stays absent", base, []string{"e@x"}, "a@x\t1\nb@x\t2\nd@x\t1\n"},
		{"a leaver not removed stays", base, []string{"c@x"}, "a@x\t1\nb@x\t2\nc@x\t1\nd@x\t1\ne@x\t2\n"},
		{"nothing delivered is the base", base, []string{"b@x", "c@x", "e@x"}, base},
		{"a first run with nothing delivered is empty", "", []string{"a@x", "b@x", "d@x", "e@x"}, ""},
		{"emails unknown to both are ignored", base, []string{"0@x", "bb@x", "z@x"}, target},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			var baseR *strings.Reader
			if tt.base != "" {
				baseR = strings.NewReader(tt.base)
			}
			var err error
			if baseR == nil {
				err = plan.PromoteByRow(nil, strings.NewReader(target), tt.undelivered, &b)
			} else {
				err = plan.PromoteByRow(baseR, strings.NewReader(target), tt.undelivered, &b)
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
}

func TestPromoteByRowRefusesABrokenSnapshot(t *testing.T) {
	t.Parallel()
	err := plan.PromoteByRow(strings.NewReader("b@x\t1\na@x\t1\n"), strings.NewReader("a@x\t1\n"), nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not sorted") {
		t.Fatalf("an unsorted base gave %v", err)
	}
}
