package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// Sandbox confines the engines a Runner starts. A worker serves many teams
// with one GitLab token, and every file an engine reads came from some
// team's project: engines must hold no secret even if code runs in them.
type Sandbox struct {
	// Isolate starts each engine in a new user and network namespace with
	// only loopback (brought up, so several training processes can meet
	// there). Engines need no network: models are local files, and hub
	// references are fetched before, outside the sandbox.
	Isolate bool
	// Account, when set, is who the engines run as (the worker runs as
	// root): a user that cannot read the worker's config or token file.
	Account *Account
	// Shim is the executable that sets a namespace up and then starts the
	// engine (the gpu-worker binary: SandboxCommand).
	Shim string
	// Hide are files an engine must not read even as the worker's own user
	// (the token file, the config file): inside the namespace an empty
	// file is mounted over each.
	Hide []string

	// isolated is the probe's answer: whether the kernel allows Isolate.
	isolated bool
}

// Account is a local user engines run as.
type Account struct {
	Name     string
	UID, GID uint32
	Home     string
}

// LookupAccount resolves a user name or numeric id.
func LookupAccount(name string) (*Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("engine user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("engine user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("engine user %q: gid %q: %w", name, u.Gid, err)
	}
	return &Account{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}, nil
}

// SandboxCommand is the hidden first argument under which the gpu-worker
// binary acts as the sandbox shim (see SandboxMain).
const SandboxCommand = "__engine-sandbox"

// Isolated reports whether engines start in their own network namespace
// (after Probe).
func (s *Sandbox) Isolated() bool { return s != nil && s.isolated }

// prepare readies a run's folders for a sandboxed engine and returns the
// environment it adds. An engine account gets its outputDir (when the
// config names one) and a home of its own inside workDir, nothing else
// the worker writes: the worker keeps writing the rest of workDir as
// itself.
func (s *Sandbox) prepare(workDir, outputDir string) ([]string, error) {
	var env []string
	if s.isolated {
		// No network inside: the hub cache is all there is.
		env = append(env, "HF_HUB_OFFLINE=1")
	}
	if s.Account == nil {
		return env, nil
	}
	home := filepath.Join(workDir, "engine-home")
	dirs := []string{home}
	if outputDir != "" {
		dirs = append(dirs, outputDir)
	}
	for _, d := range dirs {
		if err := giveFolder(d, s.Account.UID, s.Account.GID); err != nil {
			return nil, fmt.Errorf("engine folder for user %s: %w", s.Account.Name, err)
		}
	}
	return append(env, "HOME="+home), nil
}

// giveFolder creates dir (and its parents, the worker's) and gives the
// folder itself to uid:gid. It never walks what the folder holds: an
// engine, perhaps one that outlived its run, writes there and could swap a
// subfolder for a link to the host's files. The folder is opened without
// following a link and changed through that descriptor.
func giveFolder(dir string, uid, gid uint32) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("engine folder: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("engine folder: %w", err)
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("engine folder %s: not a folder of its own: %w", dir, err)
	}
	defer f.Close()
	if err := f.Chown(int(uid), int(gid)); err != nil {
		return fmt.Errorf("engine folder: %w", err)
	}
	return nil
}

// Online is r for a command that needs the network (fetching from the
// hub, which reads no project data): the same account, no namespaces.
func (r *Runner) Online() *Runner {
	c := *r
	if r.Sandbox != nil {
		sb := *r.Sandbox
		sb.isolated = false
		c.Sandbox = &sb
	}
	return &c
}
