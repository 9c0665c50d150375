//go:build !linux && !darwin

package hostproc

import "errors"

func startTime(int) (string, error) {
	return "", errors.New("reading a process's start time is not supported on this OS")
}

func bootID() string { return "" }
