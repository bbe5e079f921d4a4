package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gpu-worker/config"
	"gpu-worker/engine"
	"gpu-worker/handlers"
	"gpu-worker/limits"
	"gpu-worker/metrics"
	"gpu-worker/worker"
)

// runFlags are the settings of `gpu-worker run`.
type runFlags struct {
	*common
	workerID, workDir, python, enginesDir, logFormat, listen, gpus, engineUser, only *string
	loop, keep, retries                                                              *int
	hb, cc, claimTimeout, grace, stopTimeout, exitWhenIdle                           *time.Duration
	allowCPU, memCheck, isolate                                                      *bool
	// modelSettings are the models' own operator settings (handlers.Setting).
	modelSettings map[string]*string
	limitFlags
}

func newRunFlags(name string, stderr io.Writer) (*config.Set, *runFlags) {
	s := config.New(name)
	s.SetOutput(stderr)
	host, _ := os.Hostname()
	f := &runFlags{common: addCommon(s)}
	f.workerID = s.String("worker-id", host, "this worker's name in response.yaml")
	f.workDir = s.String("work-dir", "./work", "folder for job downloads, outputs and logs")
	f.loop = s.Int("loop-interval", 300, "seconds between scans; -1 = process what is available, then exit")
	f.keep = s.Int("keep-jobs", 5, "number of finished job folders to keep in --work-dir")
	f.hb = s.Duration("heartbeat-interval", 5*time.Minute, "how often a running job renews its claim and uploads its log")
	f.cc = s.Duration("cancel-check-interval", 30*time.Second, "how often a running job checks the manifest for cancellation")
	f.claimTimeout = s.Duration("claim-timeout", worker.DefaultClaimTimeout, "a claim without heartbeat for this long may be taken over")
	f.retries = s.Int("max-job-retries", worker.DefaultMaxJobRetries, "takeovers of one job before it is failed")
	f.grace = s.Duration("engine-grace", 60*time.Second, "time an engine gets to checkpoint after SIGTERM before SIGKILL")
	f.stopTimeout = s.Duration("stop-timeout", 140*time.Second, "longest shutdown after SIGTERM/SIGINT: engines checkpoint within --engine-grace, the final write gets the rest; then engines are killed and the worker exits (keep it under the service manager's stop timeout)")
	f.python = s.String("python", "", "the engines' Python (default: the venv scripts/engines-env.sh creates)")
	f.enginesDir = s.String("engines-dir", "", "folder holding the gpuworker_engines package (default: engines/ beside the binary or in the working directory)")
	f.allowCPU = s.Bool("allow-cpu", false, "run jobs on the CPU when no GPU is present (slow; for demos and tests)")
	f.logFormat = s.String("log-format", "text", "text or json")
	f.listen = s.String("listen-address", "", "serve Prometheus /metrics and /healthz here, e.g. :9402 (default: off)")
	f.gpus = s.String("gpus", "auto", "GPUs to use: auto|all|none, or indices 0,1 (one job per GPU), 0+1,2+3 (slots spanning GPUs for jobs with gpus: N)")
	f.memCheck = s.Bool("gpu-memory-check", true, "claim a job only when a slot's GPUs have the memory the job is estimated to need")
	f.isolate = s.Bool("engine-isolation", true, "start engines in their own user and network namespace (loopback only, the token and config files hidden) where the kernel allows it")
	f.engineUser = s.String("engine-user", "", "run engines as this user (the worker must run as root); it must not be able to read the config or token file")
	f.exitWhenIdle = s.Duration("exit-when-idle", 0, "exit 0 once no job has been runnable for this long, never while a job runs or its outcome waits to be written (for Kubernetes ScaledJobs, autostop, timers; 0: never)")
	f.only = s.String("only", "", "run this one job now, whatever its priority, then exit: PROJECT:JOB (JOB alone when one project is served); exit 1 unless it completes")
	s.Env("worker-id", "WORKER_ID")
	s.Env("work-dir", "WORK_DIR")
	s.Env("loop-interval", "LOOP_INTERVAL")
	s.Env("keep-jobs", "KEEP_JOBS")
	s.Env("python", "GPU_WORKER_PYTHON")
	s.Env("engines-dir", "GPU_WORKER_ENGINES")
	s.Env("allow-cpu", "GPU_WORKER_ALLOW_CPU")
	s.Env("listen-address", "GPU_WORKER_LISTEN_ADDRESS")
	s.Alias("listen", "listen-address")
	s.Env("gpus", "GPU_WORKER_GPUS")
	s.Env("heartbeat-interval", "GPU_WORKER_HEARTBEAT_INTERVAL")
	s.Env("cancel-check-interval", "GPU_WORKER_CANCEL_CHECK_INTERVAL")
	s.Env("claim-timeout", "GPU_WORKER_CLAIM_TIMEOUT")
	s.Env("max-job-retries", "GPU_WORKER_MAX_JOB_RETRIES")
	s.Env("engine-grace", "GPU_WORKER_ENGINE_GRACE")
	s.Env("stop-timeout", "GPU_WORKER_STOP_TIMEOUT")
	s.Env("log-format", "GPU_WORKER_LOG_FORMAT")
	s.Env("engine-isolation", "GPU_WORKER_ENGINE_ISOLATION")
	s.Env("engine-user", "GPU_WORKER_ENGINE_USER")
	f.limitFlags = addLimitFlags(s)
	s.Env("exit-when-idle", "GPU_WORKER_EXIT_WHEN_IDLE")
	f.modelSettings = map[string]*string{}
	for _, m := range handlers.Models() {
		for _, st := range m.Settings {
			f.modelSettings[st.Flag] = s.String(st.Flag, "", st.Help)
			s.Env(st.Flag, st.Env)
		}
	}
	return s, f
}

// handlersConfig is what the model pipelines get from the operator.
func (f *runFlags) handlersConfig(r *engine.Runner, lim limits.Limits) handlers.Config {
	settings := map[string]string{}
	for k, v := range f.modelSettings {
		settings[k] = *v
	}
	return handlers.Config{Engine: r, Settings: settings, Limits: lim}
}

// limitFlags are the bounds on what projects make a worker read, as flags.
// run and observe share them: an observer must bound its scans as the
// workers do, or it counts jobs they would not take.
type limitFlags map[string]*string

func addLimitFlags(s *config.Set) limitFlags {
	lf := limitFlags{}
	def := limits.Default()
	for _, st := range limits.Settings() {
		lf[st.Flag] = s.String(st.Flag, st.Get(&def), st.Help)
		s.Env(st.Flag, st.Env)
	}
	return lf
}

// limits are the bounds the flags set.
func (lf limitFlags) limits() (limits.Limits, error) {
	l := limits.Default()
	for _, st := range limits.Settings() {
		if err := st.Set(&l, *lf[st.Flag]); err != nil {
			return l, fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	return l, nil
}

// pythonAndEngines resolves the engines folder and its Python.
func pythonAndEngines(python, enginesDir string) (py, dir string, err error) {
	dir, err = findEnginesDir(enginesDir)
	if err != nil {
		return "", "", err
	}
	py = python
	if py == "" {
		py = defaultPython(dir)
	}
	return py, dir, nil
}

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, f := newRunFlags("gpu-worker run", stderr)
	if err := s.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := f.loadToken(); err != nil {
		return err
	}
	onlyProject, onlyJob, err := parseOnly(*f.only)
	if err == nil {
		err = f.checkOnly(onlyProject)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *f.exitWhenIdle < 0 {
		return fmt.Errorf("%w: --exit-when-idle must not be negative", errUsage)
	}
	log := newLogger(stderr, *f.logFormat, []string{*f.token})
	started := time.Now()
	// Engines read files any translator can commit: even if code ran in
	// one, it must not read our environment or memory through /proc.
	if err := engine.MakeUndumpable(); err != nil {
		log.Warn("could not make the worker undumpable: its engines can read its environment", "err", err)
	}
	if f.tokenFromFlag {
		log.Warn("the token was given with --token: every process of this host can read a command line; use --token-file or GITLAB_TOKEN")
	}
	sandbox, err := f.sandbox()
	if err != nil {
		return err
	}
	py, engDir, err := pythonAndEngines(*f.python, *f.enginesDir)
	if err != nil {
		return err
	}
	lim, err := f.limits()
	if err != nil {
		return err
	}
	interval := time.Duration(*f.loop) * time.Second
	if *f.loop < 0 {
		interval = -1
	}
	cfg := worker.Config{
		WorkerID: *f.workerID, WorkDir: *f.workDir, LoopInterval: interval, KeepJobs: *f.keep,
		HeartbeatInterval: *f.hb, CancelCheckInterval: *f.cc, ClaimTimeout: *f.claimTimeout, MaxJobRetries: *f.retries,
		StopTimeout:  *f.stopTimeout,
		ExitWhenIdle: *f.exitWhenIdle,
		EngineGrace:  *f.grace,
		Secrets:      []string{*f.token},
		Models:       handlers.Catalog(),
		Limits:       lim,
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v (--claim-timeout, --heartbeat-interval, --engine-grace, --stop-timeout)", errUsage, err)
	}
	// The engines' probe (a Python start and a torch import, seconds) runs
	// beside the first scan; claiming waits for its answer.
	host, err := probeHost(ctx, py, engDir, *f.gpus, *f.allowCPU, *f.memCheck, log)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	m := metrics.New(metrics.Options{Version: version, GPUs: host.lister})
	b, err := f.backend(log, backendOptions{http: &http.Client{Transport: m.Transport(nil)}})
	if errors.Is(err, errNoBackend) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	src := b.source()
	if onlyProject != "" {
		src = b.sourceOf(onlyProject)
	}
	cfg.CanRun, cfg.Slots, cfg.Hooks = host.canRun, host.slots, m.Hooks()
	log.Info(sandbox.Probe(ctx))
	runner := &engine.Runner{Python: py, EnginesDir: engDir, Grace: *f.grace, Sandbox: sandbox}
	hc := f.handlersConfig(runner, lim)
	hc.GPUs, hc.OOMRetried = host.lister, m.EngineRestarted
	w := worker.New(cfg, src, handlers.Registry(hc), log)

	if *f.listen != "" {
		ln, err := net.Listen("tcp", *f.listen)
		if err != nil {
			return fmt.Errorf("listen address: %w", err)
		}
		// Busy slots stop scanning; an idle worker must finish a scan
		// within a few intervals or /healthz reports it stuck.
		var maxScanAge time.Duration
		if interval > 0 {
			maxScanAge = 3*interval + 10*time.Minute
		}
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		defer stop()
		go metrics.Serve(sctx, ln, m.Handler(started, maxScanAge), log)
		log.Info("serving metrics", "address", ln.Addr().String())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	go func() {
		stopping := false
		for sig := range sigs {
			switch {
			case stopping:
				n := engine.KillAll()
				log.Warn("second signal: engines killed, exiting now", "signal", sig, "engines", n)
				os.Exit(130)
			case sig == syscall.SIGQUIT:
				log.Info("SIGQUIT: finishing the running job, claiming no more")
				w.Drain()
			default:
				log.Info("shutting down: interrupting running jobs so another worker can resume them", "signal", sig, "stop_timeout", *f.stopTimeout)
				stopping = true
				cancel()
				// The service manager kills us soon after; leave no engine.
				time.AfterFunc(*f.stopTimeout, func() {
					n := engine.KillAll()
					log.Error("shutdown took longer than --stop-timeout: engines killed, exiting", "stop_timeout", *f.stopTimeout, "engines", n)
					os.Exit(1)
				})
			}
		}
	}()
	log.Info("worker starting", "worker_id", *f.workerID, "work_dir", *f.workDir, "python", py, "engines", engDir, "slots", slotNames(cfg.Slots))
	if onlyJob != "" {
		err = w.RunOne(ctx, onlyJob)
	} else {
		err = w.Run(ctx)
	}
	log.Info("worker stopped")
	return err
}

// sandbox is how engines are confined: namespaces where the kernel allows
// them, the engine account, the files to hide from engines.
func (f *runFlags) sandbox() (*engine.Sandbox, error) {
	sb := &engine.Sandbox{Isolate: *f.isolate}
	if exe, err := os.Executable(); err == nil {
		sb.Shim = exe
	}
	var secrets []string
	for _, p := range []string{*f.tokenFile, f.set.Lookup("config").Value.String()} {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		secrets = append(secrets, p)
	}
	sb.Hide = secrets
	if *f.engineUser == "" {
		return sb, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: --engine-user needs a worker running as root (this one runs as uid %d)", errUsage, os.Geteuid())
	}
	acct, err := engine.LookupAccount(*f.engineUser)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if acct.UID == 0 {
		return nil, fmt.Errorf("%w: --engine-user %s is root", errUsage, acct.Name)
	}
	for _, p := range secrets {
		if readable, err := readableBy(p, acct); err != nil {
			return nil, err
		} else if readable {
			return nil, fmt.Errorf("%w: --engine-user %s can read %s: make it readable by the worker only (chmod 600, owned by root)", errUsage, acct.Name, p)
		}
	}
	sb.Account = acct
	return sb, nil
}

// parseOnly splits --only PROJECT:JOB; the project may be left out. Job
// ids have no colon, GitLab paths neither.
func parseOnly(v string) (project, job string, err error) {
	if v == "" {
		return "", "", nil
	}
	i := strings.LastIndexByte(v, ':')
	project, job = strings.TrimSpace(v[:max(i, 0)]), strings.TrimSpace(v[i+1:])
	if job == "" {
		return "", "", fmt.Errorf("--only %q names no job: use PROJECT:JOB", v)
	}
	return project, job, nil
}

func slotNames(slots []worker.Slot) string {
	names := make([]string, len(slots))
	for i, s := range slots {
		names[i] = s.Name
	}
	return strings.Join(names, ",")
}

func newLogger(w io.Writer, format string, secrets []string) *slog.Logger {
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, nil)
	} else {
		h = slog.NewTextHandler(w, nil)
	}
	return slog.New(worker.RedactHandler(h, secrets))
}

// findEnginesDir locates the folder holding gpuworker_engines.
func findEnginesDir(flagValue string) (string, error) {
	var tries []string
	if flagValue != "" {
		tries = []string{flagValue}
	} else {
		if exe, err := os.Executable(); err == nil {
			d := filepath.Dir(exe)
			tries = append(tries, filepath.Join(d, "..", "engines"), filepath.Join(d, "engines"), filepath.Join(d, "..", "share", "gpu-worker", "engines"))
		}
		tries = append(tries, "engines")
	}
	for _, d := range tries {
		if st, err := os.Stat(filepath.Join(d, "gpuworker_engines")); err == nil && st.IsDir() {
			return filepath.Abs(d)
		}
	}
	return "", fmt.Errorf("engines folder not found (tried %s); set --engines-dir", strings.Join(tries, ", "))
}

// defaultPython is the venv scripts/engines-env.sh creates: keyed by the
// hash of both requirements files under the user's cache folder.
func defaultPython(enginesDir string) string {
	var data []byte
	for _, name := range []string{"requirements.txt", "requirements-nodeps.txt"} {
		b, err := os.ReadFile(filepath.Join(enginesDir, name))
		if err != nil {
			return "python3"
		}
		data = append(data, b...)
	}
	sum := sha256.Sum256(data)
	cache := os.Getenv("GPU_WORKER_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "gpu-worker")
	}
	py := filepath.Join(cache, "venv-"+hex.EncodeToString(sum[:])[:16], "bin", "python")
	if _, err := os.Stat(py); err != nil {
		return "python3"
	}
	return py
}
