package hostproc_test

import (
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/segpilot/segpilot/shared/hostproc"
)

func TestAlive(t *testing.T) {
	t.Parallel()
	self, err := hostproc.Self()
	if err != nil {
		t.Fatal(err)
	}
	if back, err := hostproc.Parse(self.String()); err != nil || back != self {
		t.Fatalf("Parse(String()) = %+v, %v; want %+v", back, err, self)
	}
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	running, err := hostproc.Of(child.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	reused := running
	reused.Start += "1" // the same pid, started at another time
	rebooted := self
	rebooted.Boot += "x"
	elsewhere := self
	elsewhere.Host = "some-other-host"

	tests := []struct {
		name  string
		id    hostproc.ID
		alive bool
	}{
		{"this process", self, true},
		{"a running child", running, true},
		{"a reused pid", reused, false},
		{"a process of an earlier boot", rebooted, false},
	}
	for _, tt := range tests {
		if got, err := hostproc.Alive(tt.id); err != nil || got != tt.alive {
			t.Errorf("%s: Alive = %v, %v; want %v", tt.name, got, err, tt.alive)
		}
	}
	if _, err := hostproc.Alive(elsewhere); !errors.Is(err, hostproc.ErrUnknown) {
		t.Errorf("a process on another host: err = %v, want ErrUnknown", err)
	}

	// Killed: dead while a zombie (not yet reaped) and after.
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive, err := hostproc.Alive(running); alive || err != nil; alive, err = hostproc.Alive(running) {
		if time.Now().After(deadline) {
			t.Fatalf("killed, unreaped child: Alive = %v, %v; want false", alive, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := child.Wait(); err == nil {
		t.Fatal("killed child exited cleanly")
	}
	if got, err := hostproc.Alive(running); err != nil || got {
		t.Errorf("reaped child: Alive = %v, %v; want false", got, err)
	}
}

func TestParseRefusesWhatIsNotAProcess(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "0123abcd", "pid=0 host=h start=1", "pid=12 start=1", "pid=12 host=h"} {
		if _, err := hostproc.Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}
