package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"gpu-worker/config"
	"gpu-worker/engine"
	"gpu-worker/gpu"
	"gpu-worker/handlers"
	"gpu-worker/ops"
)

// opsFlags makes the flag set of an operator command.
func opsFlags(name string, stderr io.Writer) (*config.Set, *common) {
	s := config.New(name)
	s.SetOutput(stderr)
	return s, addCommon(s)
}

// parseOps parses an operator command's flags and reads --token-file.
// Settings that only `run` knows are accepted and ignored, so one config
// file (or GPU_WORKER_CONFIG) serves every command; --help lists only the
// command's own flags.
func parseOps(s *config.Set, c *common, stderr io.Writer, args []string) error {
	adopted := map[string]bool{}
	runSet, _ := newRunFlags("", io.Discard)
	runSet.VisitAll(func(f *flag.Flag) {
		if s.Lookup(f.Name) == nil {
			s.String(f.Name, "", "run setting, ignored here")
			adopted[f.Name] = true
		}
	})
	s.Usage = func() {
		fmt.Fprintf(stderr, "Usage of %s:\n", s.Name())
		s.VisitAll(func(f *flag.Flag) {
			if !adopted[f.Name] {
				fmt.Fprintf(stderr, "  --%s\n    \t%s\n", f.Name, f.Usage)
			}
		})
	}
	if err := s.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := c.loadToken(); err != nil {
		return usageErr(stderr, strings.TrimPrefix(s.Name(), "gpu-worker "), "%v", err)
	}
	return nil
}

// usageErr prints a usage problem (the caller's exit code is 2).
func usageErr(stderr io.Writer, cmd, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(stderr, "gpu-worker %s: %s\n", cmd, msg)
	return fmt.Errorf("%w: %s", errUsage, msg)
}

func quietLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func jobsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, c := opsFlags("gpu-worker jobs", stderr)
	state := s.String("state", "", "show only jobs in this state (pending, running, handed-back, completed, failed, canceled, invalid)")
	asJSON := s.Bool("json", false, "print JSON instead of a table")
	if err := parseOps(s, c, stderr, args); err != nil {
		return err
	}
	b, err := c.backend(quietLogger(stderr), backendOptions{})
	if err != nil {
		return usageErr(stderr, "jobs", "%v", err)
	}
	projects, err := b.source().Projects(ctx)
	if err != nil {
		return err
	}
	rows, listErr := ops.ListJobs(ctx, handlers.Catalog(), projects)
	if *state != "" {
		kept := rows[:0]
		for _, r := range rows {
			if r.State == *state {
				kept = append(kept, r)
			}
		}
		rows = kept
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []ops.JobRow{}
		}
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else if err := ops.WriteTable(stdout, rows, time.Now()); err != nil {
		return err
	}
	return listErr
}

func submitCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, c := opsFlags("gpu-worker submit", stderr)
	proj := s.String("project", "", "GitLab project (group/name or id) to add the job to")
	file := s.String("file", "", "YAML file holding the job's fields (instead of the flags below)")
	var o ops.JobOptions
	s.StringVar(&o.Name, "name", "", "job name shown to the team")
	s.StringVar(&o.Description, "description", "", "job description")
	s.StringVar(&o.JobType, "job-type", "", "tts or asr")
	s.StringVar(&o.Mode, "mode", "", "training, inference or training_and_inference")
	s.StringVar(&o.Model, "model", "", modelChoices())
	s.StringVar(&o.BaseCheckpoint, "base-checkpoint", "", "model to start from or to run (gpu_jobs/job_<id>/models/best_model.pt)")
	s.StringVar(&o.ModelSize, "size", "", "model size: tiny or default")
	s.IntVar(&o.Epochs, "epochs", 0, "training epochs (default: the model's)")
	s.IntVar(&o.Priority, "priority", 0, "higher runs first")
	s.IntVar(&o.GPUs, "job-gpus", 0, "GPUs to spread this job over (needs a worker with such a slot)")
	s.BoolVar(&o.AllowCPU, "job-allow-cpu", false, "let CPU-only workers run this job")
	trainInc := s.String("train-include", "", "comma-separated verses (MRK 1:1, MRK 1, MRK) or cell ids to train on")
	trainExc := s.String("train-exclude", "", "comma-separated verses or cell ids to leave out of training")
	inferInc := s.String("infer-include", "", "comma-separated verses or cell ids to generate or transcribe")
	inferExc := s.String("infer-exclude", "", "comma-separated verses or cell ids to skip at inference")
	s.StringVar(&o.VoiceReference, "voice-reference", "", "TTS: recording whose voice to use")
	s.StringVar(&o.AudioFormat, "audio-format", "", "TTS output: wav, ogg, mp3 or webm")
	s.StringVar(&o.Timeout, "timeout", "", "deadline, e.g. 2027-01-01T00:00:00Z")
	if err := parseOps(s, c, stderr, args); err != nil {
		return err
	}
	o.TrainInclude, o.TrainExclude = splitList(*trainInc), splitList(*trainExc)
	o.InferInclude, o.InferExclude = splitList(*inferInc), splitList(*inferExc)
	job := ops.JobNode(o)
	if *file != "" {
		data, err := os.ReadFile(*file)
		if err != nil {
			return fmt.Errorf("read job file: %w", err)
		}
		if job, err = ops.ParseJobFile(data); err != nil {
			return err
		}
	}
	b, err := c.backend(quietLogger(stderr), backendOptions{})
	if err != nil {
		return usageErr(stderr, "submit", "%v", err)
	}
	p, err := b.one(ctx, *proj)
	if err != nil {
		return usageErr(stderr, "submit", "%v", err)
	}
	id, err := ops.Submit(ctx, p, handlers.Catalog(), job, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "submitted job %s to %s\n", id, p.Name())
	return nil
}

func cancelCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, c := opsFlags("gpu-worker cancel", stderr)
	proj := s.String("project", "", "GitLab project (group/name or id) of the job")
	if err := parseOps(s, c, stderr, args); err != nil {
		return err
	}
	if s.NArg() != 1 {
		return usageErr(stderr, "cancel", "name one job: gpu-worker cancel [flags] JOB_ID")
	}
	b, err := c.backend(quietLogger(stderr), backendOptions{})
	if err != nil {
		return usageErr(stderr, "cancel", "%v", err)
	}
	p, err := b.one(ctx, *proj)
	if err != nil {
		return usageErr(stderr, "cancel", "%v", err)
	}
	id := s.Arg(0)
	if err := ops.Cancel(ctx, p, id); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "canceled job %s in %s (a running job stops at its next cancel check)\n", id, p.Name())
	return nil
}

// modelChoices lists the models for help texts: "MMS (asr), StableTTS (tts), …".
func modelChoices() string {
	var parts []string
	for _, m := range handlers.Models() {
		parts = append(parts, fmt.Sprintf("%s (%s)", m.Spec.Name, m.Spec.JobType))
	}
	return strings.Join(parts, ", ")
}

// errChecksFailed: doctor found problems (exit code 1, report on stdout).
var errChecksFailed = errors.New("some checks failed")

// doctorCmd checks the host with the same settings `run` would use.
func doctorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, f := newRunFlags("gpu-worker doctor", stderr)
	minFree := s.Int("min-free-disk", 20, "GiB the work dir's volume should have free")
	if err := parseOps(s, f.common, stderr, args); err != nil {
		return err
	}
	log := quietLogger(stderr)
	d := ops.DoctorDeps{
		FFmpeg:      ops.FFmpegVersion,
		AllowCPU:    *f.allowCPU,
		WorkDir:     *f.workDir,
		FreeDisk:    ops.FreeDisk,
		MinFreeDisk: uint64(*minFree) * gpu.GiB,
	}
	d.GPUs, d.GPUReason = gpu.Discover()
	if py, dir, err := pythonAndEngines(*f.python, *f.enginesDir); err != nil {
		d.Engines = func(context.Context) (string, error) { return "", err }
	} else {
		d.Engines = ops.EngineProbe(py, dir)
	}
	b, err := f.backend(log, backendOptions{maxRetries: 1})
	if err != nil {
		return usageErr(stderr, "doctor", "%v", err)
	}
	b.doctor(&d)
	var runner *engine.Runner
	if py, dir, err := pythonAndEngines(*f.python, *f.enginesDir); err == nil {
		runner = &engine.Runner{Python: py, EnginesDir: dir, Grace: *f.grace}
	}
	lim, err := f.limits()
	if err != nil {
		return usageErr(stderr, "doctor", "%v", err)
	}
	checks := ops.DoctorChecks(d)
	for _, c := range handlers.DoctorChecks(f.handlersConfig(runner, lim)) {
		checks = append(checks, ops.Check(c))
	}
	fmt.Fprintf(stdout, "gpu-worker %s doctor\n", version)
	if !ops.WriteReport(stdout, ops.RunChecks(ctx, checks, 2*time.Minute)) {
		return errChecksFailed
	}
	return nil
}
