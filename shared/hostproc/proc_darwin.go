package hostproc

import (
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

func startTime(pid int) (string, error) {
	k, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if errors.Is(err, unix.ESRCH) || err == nil && k.Proc.P_pid != int32(pid) {
		return "", errGone
	}
	if err != nil {
		return "", err
	}
	if k.Proc.P_stat == 5 { // SZOMB in <sys/proc.h>: exited, not yet reaped
		return "", errGone
	}
	t := k.Proc.P_starttime
	return strconv.FormatInt(t.Sec, 10) + "." + strconv.FormatInt(int64(t.Usec), 10), nil
}

func bootID() string {
	tv, err := unix.SysctlTimeval("kern.boottime")
	if err != nil {
		return ""
	}
	return strconv.FormatInt(tv.Sec, 10)
}
