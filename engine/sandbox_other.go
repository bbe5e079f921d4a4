//go:build !linux

package engine

import (
	"context"
	"fmt"
	"os"
	"syscall"
)

// Probe: namespaces are Linux's; elsewhere engines run unconfined.
func (s *Sandbox) Probe(context.Context) string {
	s.isolated = false
	return "engine isolation off: this system has no user or network namespaces; engines run as the worker's own user with the host's network"
}

// wrap runs args unchanged: there is nothing to confine them with here.
func (s *Sandbox) wrap(args []string, _ *syscall.SysProcAttr) []string { return args }

// SandboxMain is not available outside Linux.
func SandboxMain([]string) int {
	fmt.Fprintln(os.Stderr, "engine sandbox: not supported on this system")
	return 126
}

// MakeUndumpable has no equivalent here.
func MakeUndumpable() error { return nil }
