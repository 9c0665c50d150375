// Package filelock takes exclusive locks on files, between processes:
// the local bucket folder's changes, and the simulator state a local run
// keeps beside it.
package filelock

import (
	"errors"
	"fmt"
	"os"
)

// ErrLocked is returned by Lock without waiting when another holds the lock.
var ErrLocked = errors.New("locked by another process")

// Held is a lock taken; Unlock (or the process's end) releases it.
type Held struct{ f *os.File }

// Lock takes the lock of the file at path, creating the file if needed.
// With wait it blocks until the lock is free; without, it fails with
// ErrLocked at once.
func Lock(path string, wait bool) (*Held, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := lock(f, wait); err != nil {
		f.Close()
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("locking %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return &Held{f: f}, nil
}

// Unlock releases the lock: it belongs to the open file, so closing it does.
func (h *Held) Unlock() error { return h.f.Close() }
