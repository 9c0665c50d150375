package filelock_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/segpilot/segpilot/shared/filelock"
)

func TestLock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.lock")
	first, err := filelock.Lock(path, false)
	if err != nil {
		t.Fatal(err)
	}
	// Another open of the file is another holder, as another process is.
	if _, err := filelock.Lock(path, false); !errors.Is(err, filelock.ErrLocked) {
		t.Fatalf("second lock while held: %v, want ErrLocked", err)
	}
	got := make(chan error, 1)
	go func() {
		h, err := filelock.Lock(path, true)
		if err == nil {
			err = h.Unlock()
		}
		got <- err
	}()
	if err := first.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting lock: %v", err)
	}
	again, err := filelock.Lock(path, false)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	if err := again.Unlock(); err != nil {
		t.Fatal(err)
	}
}
