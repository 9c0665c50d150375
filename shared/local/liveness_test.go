package local

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/hostproc"
	"github.com/segpilot/segpilot/shared/run"
	"github.com/segpilot/segpilot/shared/store"
)

// TestLivenessOfAnAttempt: what the execution's record and its process say
// of an attempt holding an export, with this host's real processes. A
// process on another host cannot be judged from here, so the attempt is
// never taken for ended (the drain waits): two runs of one export at once
// are worse than one that waits.
func TestLivenessOfAnAttempt(t *testing.T) {
	t.Parallel()
	self, err := hostproc.Self()
	if err != nil {
		t.Fatal(err)
	}
	// A process that runs until its stdin closes, so it is named while it
	// lives (a process that exits at once can be gone before it is named).
	dead := exec.Command("cat")
	stdin, err := dead.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Start(); err != nil {
		t.Fatal(err)
	}
	gone, err := hostproc.Of(dead.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dead.Wait(); err != nil {
		t.Fatal(err)
	}
	elsewhere := self
	elsewhere.Host += "-elsewhere"
	closed := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		record  *nameRecord // nil: none
		want    run.LiveState
		wantErr bool
	}{
		{"no record: not started", nil, run.LiveNotStarted, false},
		{"closed", &nameRecord{Process: self.String(), ClosedAt: closed}, run.LiveEnded, false},
		{"open, its process alive", &nameRecord{Process: self.String()}, run.LiveRunning, false},
		{"open, its process gone", &nameRecord{Process: gone.String()}, run.LiveEnded, false},
		{"open, its process on another host", &nameRecord{Process: elsewhere.String()}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, err := store.NewFolder(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			now := func() time.Time { return closed.Add(time.Hour) }
			names := storeNames{st: st, now: now, self: self.String()}
			if tt.record != nil {
				if err := putRecord(st, names.key("e-1-1"), *tt.record); err != nil {
					t.Fatal(err)
				}
			}
			l := liveness{names: names, procs: hostProcesses(self.String()), now: now}
			live, err := l.Attempt(context.Background(), run.Holder{Execution: "e-1-1"})
			if tt.wantErr { // cannot be told: an error, or Unknown, and the drain waits
				if err == nil && live.State != run.LiveUnknown {
					t.Fatalf("Attempt = %+v; want it unknown (an error, or LiveUnknown)", live)
				}
				return
			}
			if err != nil || live.State != tt.want {
				t.Fatalf("Attempt = %+v, %v; want state %v", live, err, tt.want)
			}
		})
	}
}

func putRecord(st store.ObjectStore, key string, rec nameRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = st.Put(context.Background(), key, bytes.NewReader(b), store.PutOptions{})
	return err
}
