package local

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/runner"
	"github.com/segpilot/segpilot/shared/secrets"
	"github.com/segpilot/segpilot/shared/store"
)

// Step Functions refuses an execution name its state machine used in the
// last 90 days, whichever caller asks; locally every process sharing a
// bucket folder must see the names the others used.
func TestExecutionNamesAcrossProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	pipeline := func() *Pipeline {
		p, err := New(Options{BucketDir: dir, Secrets: secrets.Static{}, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	first, second := pipeline(), pipeline() // two processes on one folder
	ctx := context.Background()
	input := []byte(`{"export":"e","runId":"e-1","attempt":1,"plan":"none","itemsKey":"runs/e/e-1/items.json","concurrency":1}`)
	if _, err := first.Store.Put(ctx, "runs/e/e-1/items.json", stringsReader("[]"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// Finalize fails (there is no manifest): the name is used all the same.
	if started, _ := first.Runner.StartRun(ctx, "e-1", input); !started {
		t.Fatal("a new name did not start")
	}
	first.Runner.Wait() // the execution ends, and its name is recorded closed
	if started, err := second.Runner.StartRun(ctx, "e-1", input); started || err != nil {
		t.Fatalf("another process started the used name e-1 again (started=%v, err=%v)", started, err)
	}
	now = now.Add(runner.NameReuseAfter - time.Hour)
	if started, _ := second.Runner.StartRun(ctx, "e-1", input); started {
		t.Fatal("e-1 started again before 90 days had passed since its execution closed")
	}
	now = now.Add(2 * time.Hour)
	if started, _ := second.Runner.StartRun(ctx, "e-1", input); !started {
		t.Fatal("e-1 did not start again 90 days after its execution closed")
	}
	second.Runner.Wait() // before the folder goes: the execution writes to it
}

func stringsReader(s string) *stringReader { return &stringReader{s: s} }

type stringReader struct {
	s string
	i int
}

func (r *stringReader) Read(p []byte) (int, error) {
	if r.i >= len(r.s) {
		return 0, io.EOF
	}
	n := copy(p, r.s[r.i:])
	r.i += n
	return n, nil
}
