package plan_test

import (
	"bytes"
	"io"
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
		name          string
		base          string
		kept, unknown []string
		want          string
	}{
		{"everything delivered", base, nil, nil, target},
		{"a changed contact the destination refused keeps its old hash", base, []string{"b@x"}, nil, "a@x\t1\nb@x\t1\nd@x\t1\ne@x\t2\n"},
		{"a new contact the destination refused stays absent", base, []string{"e@x"}, nil, "a@x\t1\nb@x\t2\nd@x\t1\n"},
		{"a changed contact whose upsert failed is unknown", base, nil, []string{"b@x"}, "a@x\t1\nb@x\tunknown\nd@x\t1\ne@x\t2\n"},
		{"a new contact whose upsert failed is unknown", base, nil, []string{"e@x"}, "a@x\t1\nb@x\t2\nd@x\t1\ne@x\tunknown\n"},
		{"a leaver whose removal failed is unknown", base, nil, []string{"c@x"}, "a@x\t1\nb@x\t2\nc@x\tunknown\nd@x\t1\ne@x\t2\n"},
		{"refused and unknown together", base, []string{"e@x"}, []string{"b@x", "c@x"}, "a@x\t1\nb@x\tunknown\nc@x\tunknown\nd@x\t1\n"},
		{"a first run with nothing delivered", "", nil, []string{"a@x", "b@x", "d@x", "e@x"},
			"a@x\tunknown\nb@x\tunknown\nd@x\tunknown\ne@x\tunknown\n"},
		{"emails unknown to both snapshots are ignored", base, []string{"0@x"}, []string{"bb@x", "z@x"}, target},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			var baseR io.Reader
			if tt.base != "" {
				baseR = strings.NewReader(tt.base)
			}
			if err := plan.PromoteByRow(baseR, strings.NewReader(target), tt.kept, tt.unknown, &b); err != nil {
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
	err := plan.PromoteByRow(strings.NewReader("b@x\t1\na@x\t1\n"), strings.NewReader("a@x\t1\n"), nil, nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not sorted") {
		t.Fatalf("an unsorted base gave %v", err)
	}
}
