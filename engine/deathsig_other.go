//go:build !linux

package engine

import "syscall"

// setDeathSignal: no parent-death signal here; the engine watches its
// parent itself (GPU_WORKER_PARENT_PID).
func setDeathSignal(*syscall.SysProcAttr) {}
