//go:build unix

package filelock

import (
	"errors"
	"os"
	"syscall"
)

// A flock lock belongs to one open file: it excludes other processes (and
// other opens in this one) and vanishes when the file is closed or its
// process dies.
func lock(f *os.File, wait bool) error {
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		err := syscall.Flock(int(f.Fd()), how)
		switch {
		case errors.Is(err, syscall.EWOULDBLOCK):
			return ErrLocked
		case err != syscall.EINTR:
			return err
		}
	}
}
