package engine

import "syscall"

// setDeathSignal has the kernel kill the engine if the worker dies first.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
