//go:build linux

package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// namespaces an isolated engine gets: its own user namespace (so it holds
// no capability outside it), network namespace (loopback only) and mount
// namespace (to hide files).
const namespaces = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS

// Probe starts the shim once in the namespaces and records whether the
// kernel allows them; it returns the one line the worker logs about it.
func (s *Sandbox) Probe(ctx context.Context) string {
	s.isolated = false
	who := "as the worker's own user"
	if s.Account != nil {
		who = fmt.Sprintf("as user %s (uid %d)", s.Account.Name, s.Account.UID)
	}
	if !s.Isolate {
		return "engine isolation off (disabled by setting): engines run " + who + " with the host's network"
	}
	if s.Shim == "" {
		return "engine isolation off: no sandbox shim; engines run " + who + " with the host's network"
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Shim, s.shimArgs(true, nil)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	s.apply(cmd.SysProcAttr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		why := strings.TrimSpace(stderr.String())
		if why == "" {
			why = err.Error()
		}
		return "engine isolation off: the kernel does not allow a user and network namespace here (" + why +
			"); engines run " + who + " and can reach the network"
	}
	s.isolated = true
	return "engine isolation on: engines run in their own network namespace (loopback only), " + who +
		", without capabilities" + hidden(s.Hide)
}

// shimArgs are the shim's arguments before the engine's own.
func (s *Sandbox) shimArgs(probe bool, engineArgs []string) []string {
	args := []string{SandboxCommand}
	if probe {
		args = append(args, "--probe")
	}
	for _, h := range s.Hide {
		args = append(args, "--hide", h)
	}
	return append(append(args, "--"), engineArgs...)
}

// wrap returns the command line that runs args under the sandbox and sets
// up attr for it: in the namespaces when the probe found them allowed,
// else only as the engine account (if any).
func (s *Sandbox) wrap(args []string, attr *syscall.SysProcAttr) []string {
	if s == nil {
		return args
	}
	if !s.isolated {
		if s.Account != nil {
			attr.Credential = &syscall.Credential{Uid: s.Account.UID, Gid: s.Account.GID, Groups: []uint32{}}
		}
		return args
	}
	s.apply(attr)
	return append([]string{s.Shim}, s.shimArgs(false, args)...)
}

// apply sets the namespaces and credentials of a shim. Inside, the engine
// is the namespace's root mapped to one host user (the worker's, or the
// engine account); the shim drops every capability before it starts the
// engine.
func (s *Sandbox) apply(attr *syscall.SysProcAttr) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if s.Account != nil {
		uid, gid = s.Account.UID, s.Account.GID
	}
	attr.Cloneflags |= namespaces
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(uid), Size: 1}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(gid), Size: 1}}
	// Only a privileged worker may drop the supplementary groups (root's
	// groups must not follow the engine account).
	privileged := os.Geteuid() == 0
	attr.GidMappingsEnableSetgroups = privileged
	attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: !privileged}
	if privileged {
		attr.Credential.Groups = []uint32{}
	}
}

// SandboxMain is the shim: inside the new namespaces it brings loopback
// up, hides the named files, gives up every capability and executes the
// engine. args are what follows SandboxCommand. It returns only on error.
func SandboxMain(args []string) int {
	// Capabilities and securebits belong to a thread: set them on the one
	// that calls execve.
	runtime.LockOSThread()
	probe := false
	var hide []string
	for len(args) > 0 && args[0] != "--" {
		switch {
		case args[0] == "--probe":
			probe = true
			args = args[1:]
		case args[0] == "--hide" && len(args) > 1:
			hide = append(hide, args[1])
			args = args[2:]
		default:
			return shimFail(fmt.Errorf("unknown argument %q", args[0]))
		}
	}
	if len(args) > 0 {
		args = args[1:]
	}
	if !probe && len(args) == 0 {
		return shimFail(errors.New("no command to run"))
	}
	if err := loopbackUp(); err != nil {
		return shimFail(fmt.Errorf("bring loopback up: %w", err))
	}
	if err := hideFiles(hide); err != nil {
		return shimFail(err)
	}
	if err := dropCapabilities(); err != nil {
		return shimFail(err)
	}
	if probe {
		return 0
	}
	prog, err := exec.LookPath(args[0])
	if err != nil {
		return shimFail(err)
	}
	return shimFail(syscall.Exec(prog, args, os.Environ()))
}

func shimFail(err error) int {
	fmt.Fprintf(os.Stderr, "engine sandbox: %v\n", err)
	return 126
}

// loopbackUp sets the IFF_UP flag of "lo" in the new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// hideFiles mounts an empty file over each path the engine could read.
// A path the shim cannot open is one the engine cannot read either.
func hideFiles(paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	// Our mounts must not propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	empty, err := os.CreateTemp("", "gpu-worker-hidden-")
	if err != nil {
		return fmt.Errorf("hide files: %w", err)
	}
	empty.Close()
	defer os.Remove(empty.Name()) // the mounts keep the inode
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		f.Close()
		if err := unix.Mount(empty.Name(), p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("hide %s: %w", p, err)
		}
	}
	return nil
}

// dropCapabilities leaves the engine without capabilities even though it
// is root inside its namespace: no capability on exec for uid 0, none
// ambient, no new privileges from set-uid files.
func dropCapabilities() error {
	const bits = 1<<0 | 1<<1 | 1<<6 | 1<<7 // NOROOT(+LOCKED), NO_CAP_AMBIENT_RAISE(+LOCKED)
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, bits, 0, 0, 0); err != nil {
		return fmt.Errorf("set securebits: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no new privileges: %w", err)
	}
	return nil
}

// MakeUndumpable makes the worker's /proc/<pid>/environ, memory and file
// descriptors unreadable to processes without CAP_SYS_PTRACE, its own
// engines included.
func MakeUndumpable() error {
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

func hidden(files []string) string {
	if len(files) == 0 {
		return ""
	}
	return ", the worker's own files hidden: " + strings.Join(files, ", ")
}
