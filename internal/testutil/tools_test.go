package testutil

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// fakeT records what a test helper reported instead of stopping the test.
type fakeT struct {
	testing.TB
	fatal, skip string
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }
func (f *fakeT) Skipf(format string, args ...any)  { f.skip = fmt.Sprintf(format, args...) }

func TestMissingTool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		ci        bool
		wantFatal bool
	}{
		{"in CI a missing tool fails the test", true, true},
		{"elsewhere it skips loudly", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeT{TB: t}
			missingTool(f, tt.ci, "cfn-lint", "pip install cfn-lint")
			msg := f.skip
			if tt.wantFatal {
				msg = f.fatal
			}
			if (f.fatal != "") != tt.wantFatal || (f.skip != "") == tt.wantFatal {
				t.Fatalf("fatal %q, skip %q; want only the %s", f.fatal, f.skip, map[bool]string{true: "failure", false: "skip"}[tt.wantFatal])
			}
			if !strings.Contains(msg, "cfn-lint") || !strings.Contains(msg, "pip install cfn-lint") {
				t.Errorf("message %q does not name the tool and how to install it", msg)
			}
			if !tt.wantFatal && !strings.HasPrefix(msg, "WARNING: ") {
				t.Errorf("skip message %q does not start with WARNING:", msg)
			}
		})
	}
}

func TestNeedToolFindsTool(t *testing.T) {
	t.Parallel()
	f := &fakeT{TB: t}
	if p := NeedTool(f, "sh", "apt-get install dash"); p == "" || f.fatal != "" || f.skip != "" {
		t.Errorf("NeedTool(sh) = %q, fatal %q, skip %q", p, f.fatal, f.skip)
	}
	if p := NeedTool(f, "segpilot-no-such-tool", "nowhere"); p != "" || f.fatal == "" && f.skip == "" {
		t.Errorf("NeedTool(missing) = %q and reported nothing", p)
	}
}

func TestMotoServes(t *testing.T) {
	t.Parallel()
	endpoint := Moto(t)
	resp, err := http.Get(endpoint + "/moto-api/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("moto-api answered %d", resp.StatusCode)
	}
}
