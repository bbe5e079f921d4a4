// Package engine starts a Python model engine as a subprocess in its own
// process group, streams its JSON-lines events and stops it on cancel.
package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// ExitInterrupted is the engine's exit code after it saved a resumable
// checkpoint on SIGTERM.
const ExitInterrupted = 75

// Event is one line an engine printed on stdout.
type Event struct {
	Kind string `json:"event"`

	// progress
	Epoch  int                `json:"epoch"`
	Epochs int                `json:"epochs"`
	Step   int                `json:"step"`
	Steps  int                `json:"steps"`
	Loss   *float64           `json:"loss"`
	ETA    *float64           `json:"eta_s"`
	Val    map[string]float64 `json:"val"`

	// checkpoint / item
	Path string `json:"path"`
	// Kind of a checkpoint: resumable (with optimizer state, stays on the
	// machine), portable (without, the one uploaded for a takeover), best or
	// final; of an error: oom, refused (a project file failed its check)...
	Checkpoint string `json:"kind"`
	ID         string `json:"id"`

	// error / warning
	Message string `json:"message"`

	// Fields holds the whole object (result payloads, item fields).
	Fields map[string]any `json:"-"`
}

// Error is an engine run that failed.
type Error struct {
	Message  string
	Kind     string // "oom" for out of memory
	ExitCode int
}

func (e *Error) Error() string { return "engine: " + e.Message }

// IsOOM reports an engine that ran out of memory.
func IsOOM(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == "oom"
}

// ErrInterrupted reports an engine stopped on request after saving state.
var ErrInterrupted = errors.New("engine interrupted")

// Runner starts engines from one Python environment.
type Runner struct {
	Python     string        // the engines' venv python
	EnginesDir string        // folder holding the gpuworker_engines package
	Grace      time.Duration // SIGTERM → SIGKILL delay (default 60s)
	Env        []string      // extra environment (CUDA_VISIBLE_DEVICES, ...)
	// Launcher, when set, replaces "python -m" (e.g. torchrun for several GPUs).
	Launcher []string
	// Sandbox confines the engines (nil: they run as the worker's children
	// with its user and network).
	Sandbox *Sandbox
}

// Run writes config to <workDir>/<engine>-<command>.json, runs the engine
// and calls onEvent for each event. Logs (stderr and non-JSON stdout) go to
// log. It returns the result event's fields.
func (r *Runner) Run(ctx context.Context, engine, command string, config any, workDir string, log io.Writer, onEvent func(Event)) (map[string]any, error) {
	workDir, err := filepath.Abs(workDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(workDir, engine+"-"+command+".json")
	b, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("engine config: %w", err)
	}
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return nil, fmt.Errorf("engine config: %w", err)
	}
	args := append([]string{}, r.Launcher...)
	if len(args) == 0 {
		args = []string{r.Python}
	}
	args = append(args, "-m", "gpuworker_engines", engine, command, "--config", cfgPath)
	env := r.environ()
	attr := &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(attr)
	if r.Sandbox != nil {
		var out struct {
			Dir string `json:"output_dir"`
		}
		json.Unmarshal(b, &out) // a config without output_dir (or not an object) names none
		extra, err := r.Sandbox.prepare(workDir, out.Dir)
		if err != nil {
			return nil, fmt.Errorf("start engine %s %s: %w", engine, command, err)
		}
		env = append(env, extra...)
		args = r.Sandbox.wrap(args, attr)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = r.EnginesDir
	cmd.Env = env
	cmd.SysProcAttr = attr
	if log == nil {
		log = io.Discard
	}
	lw := &lockedWriter{w: log}
	cmd.Stderr = lw
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// The kernel's parent-death signal follows the thread that started the
	// child: keep this goroutine on it until the engine is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start engine %s %s: %w", engine, command, err)
	}
	pgid := cmd.Process.Pid
	live.add(pgid)
	defer live.remove(pgid)

	// stop ends the engine: the caller's cancel, or output we cannot read.
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-runCtx.Done():
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			grace := r.Grace
			if grace <= 0 {
				grace = 60 * time.Second
			}
			select {
			case <-time.After(grace):
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			case <-stopped:
			}
		case <-stopped:
		}
	}()

	var result map[string]any
	var lastErr *Error
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for sc.Scan() {
		line := sc.Bytes()
		ev, ok := parseEvent(line)
		if !ok {
			fmt.Fprintf(lw, "%s\n", line)
			continue
		}
		switch ev.Kind {
		case "result":
			result = ev.Fields
			delete(result, "event")
		case "error":
			lastErr = &Error{Message: ev.Message, Kind: ev.Checkpoint}
			fmt.Fprintf(lw, "engine error: %s\n", ev.Message)
		case "warning":
			fmt.Fprintf(lw, "engine warning: %s\n", ev.Message)
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	var readErr *Error
	if err := sc.Err(); err != nil {
		// Unread output would block the engine on a full pipe while the
		// heartbeat keeps the job alive: stop it, draining what it still
		// prints so that it can checkpoint and exit.
		msg := fmt.Sprintf("%s %s: reading its output failed: %v", engine, command, err)
		if errors.Is(err, bufio.ErrTooLong) {
			msg = fmt.Sprintf("%s %s printed a line longer than %d MiB on stdout; the engine was stopped", engine, command, maxLine>>20)
		}
		readErr = &Error{Message: msg}
		fmt.Fprintf(lw, "%s\n", msg)
		stop(readErr)
		_, _ = io.Copy(io.Discard, stdout)
	}
	waitErr := cmd.Wait()
	close(stopped)
	// The engine may have left children; the group goes with it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)

	code := -1
	var exitErr *exec.ExitError
	if errors.As(waitErr, &exitErr) {
		code = exitErr.ExitCode()
	}
	if readErr != nil {
		readErr.ExitCode = code
		return result, readErr
	}
	if waitErr == nil {
		if result == nil {
			result = map[string]any{}
		}
		return result, nil
	}
	if code == ExitInterrupted {
		return result, ErrInterrupted
	}
	if ctx.Err() != nil {
		return result, fmt.Errorf("engine stopped: %w", context.Cause(ctx))
	}
	if lastErr != nil {
		lastErr.ExitCode = code
		return result, lastErr
	}
	return result, &Error{Message: fmt.Sprintf("%s %s exited with %v", engine, command, waitErr), ExitCode: code}
}

// maxLine is the longest stdout line an engine may print.
const maxLine = 16 << 20

func parseEvent(line []byte) (Event, bool) {
	if len(line) == 0 || line[0] != '{' {
		return Event{}, false
	}
	var ev Event
	if err := json.Unmarshal(line, &ev); err != nil || ev.Kind == "" {
		return Event{}, false
	}
	_ = json.Unmarshal(line, &ev.Fields)
	return ev, true
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
