// Command gpu-worker turns a GPU machine into a worker for Codex
// translation projects: it claims TTS/ASR jobs from gpu_jobs/manifest.yaml,
// runs them, and writes the results back.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"gpu-worker/engine"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"run":     runCmd,
	"jobs":    jobsCmd,
	"submit":  submitCmd,
	"cancel":  cancelCmd,
	"doctor":  doctorCmd,
	"models":  modelsCmd,
	"observe": observeCmd,
	"queue":   queueCmd,
	"version": func(context.Context, []string, io.Writer, io.Writer) error {
		fmt.Println("gpu-worker", version)
		return nil
	},
}

const usage = `gpu-worker — runs TTS and ASR jobs for Codex translation projects

Usage:
  gpu-worker run     [flags]   serve jobs (GitLab, or --project-dir for a local project);
                               --only PROJECT:JOB runs one job now and exits
  gpu-worker jobs    [flags]   list jobs across projects
  gpu-worker submit  [flags]   add a job to a project's manifest
  gpu-worker cancel  [flags]   cancel a job
  gpu-worker queue   [flags]   what workers would claim now, and what runs (a table, or --json)
  gpu-worker observe [flags]   measure the queue for autoscalers: /queue (JSON) and /metrics, no GPU, no writes
  gpu-worker doctor  [flags]   check this host: token, GitLab, LFS, ffmpeg, engines, GPUs, disk, model files
  gpu-worker models            the models, their manifest fields and operator settings
  gpu-worker version

Run "gpu-worker <command> --help" for a command's flags.
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == engine.SandboxCommand {
		return engine.SandboxMain(args[1:])
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "gpu-worker: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(context.Background(), args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "gpu-worker:", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	}
	fmt.Fprintln(stderr, "gpu-worker:", err)
	return 1
}

var errUsage = errors.New("usage error")
