// Package hostproc names a process so that another process on the same
// host can tell whether it still runs, even after its pid is reused: local
// mode records it in an export's lock, so a second segpilot on the same
// bucket folder waits for a live holder and takes over from a dead one.
package hostproc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ID identifies one process: its host and boot, pid and start time.
type ID struct {
	Host  string
	Boot  string
	PID   int
	Start string
}

// String is the form recorded in locks: "pid=… host=… boot=… start=…".
func (id ID) String() string {
	return fmt.Sprintf("pid=%d host=%s boot=%s start=%s", id.PID, id.Host, id.Boot, id.Start)
}

// Parse reads an ID written by String.
func Parse(s string) (ID, error) {
	var id ID
	for f := range strings.FieldsSeq(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pid":
			id.PID, _ = strconv.Atoi(v) // checked below
		case "host":
			id.Host = v
		case "boot":
			id.Boot = v
		case "start":
			id.Start = v
		}
	}
	if id.PID <= 0 || id.Host == "" || id.Start == "" {
		return ID{}, fmt.Errorf("%q does not name a process", s)
	}
	return id, nil
}

// ErrUnknown says a process's liveness cannot be told from here.
var ErrUnknown = errors.New("cannot tell whether the process still runs")

// Self returns this process's ID.
func Self() (ID, error) { return Of(os.Getpid()) }

// Of returns the ID of the process pid on this host.
func Of(pid int) (ID, error) {
	host, err := os.Hostname()
	if err != nil {
		return ID{}, fmt.Errorf("naming process %d: %w", pid, err)
	}
	start, err := startTime(pid)
	switch {
	case errors.Is(err, errGone):
		return ID{}, fmt.Errorf("naming process %d: %w", pid, err)
	case err != nil:
		start = "unknown" // Alive will answer ErrUnknown: others wait rather than guess
	}
	return ID{Host: host, Boot: bootID(), PID: pid, Start: start}, nil
}

// Alive says whether id's process still runs. The error wraps ErrUnknown
// when it cannot be told: a process on another host, or an OS without a
// way to read a process's start time.
func Alive(id ID) (bool, error) {
	host, err := os.Hostname()
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrUnknown, err)
	}
	if id.Host != host {
		return false, fmt.Errorf("%w: it runs on host %s, this is %s", ErrUnknown, id.Host, host)
	}
	if b := bootID(); b != "" && id.Boot != "" && b != id.Boot {
		return false, nil // the host restarted since
	}
	start, err := startTime(id.PID)
	switch {
	case errors.Is(err, errGone):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%w: %v", ErrUnknown, err)
	}
	return start == id.Start, nil // another start time: the pid was reused
}

// errGone: no such process, or one that has exited (a zombie).
var errGone = errors.New("no such process")
