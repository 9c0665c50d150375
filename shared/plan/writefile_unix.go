//go:build unix

package plan

import (
	"io"
	"os"
	"syscall"
)

// writeFile is os.WriteFile(path, data, 0o600) without what os.OpenFile
// does for every file to try the runtime poller (on Linux four fcntl calls
// and an epoll_ctl that fails for regular files): a first run writes a file
// per 100 profiles, and those calls cost as much as the write.
func writeFile(path string, data []byte) error {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o600)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	for len(data) > 0 {
		n, err := syscall.Write(fd, data)
		if err == syscall.EINTR {
			continue
		}
		if err == nil && n <= 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			syscall.Close(fd) // the write error is the one to report
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		data = data[n:]
	}
	if err := syscall.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}
