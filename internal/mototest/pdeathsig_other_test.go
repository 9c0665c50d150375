//go:build unix && !linux

package mototest

import "syscall"

// dieWithParent: only Linux can tie a child's life to its parent's; moto
// still ends when its standard input closes.
func dieWithParent(*syscall.SysProcAttr) {}
