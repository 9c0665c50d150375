package mototest

import "syscall"

// dieWithParent has the kernel kill a child process when the test process
// dies (a go test -timeout panic runs no cleanups), so no emulator or moto
// outlives the test.
func dieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
