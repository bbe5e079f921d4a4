package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"gpu-worker/contract"
	"gpu-worker/engine"
	"gpu-worker/gpu"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// JobGPUs is how many GPUs a job asks for (at least one).
func JobGPUs(j *manifest.Job) int { return max(j.GPUs, 1) }

// Share is the part of a slot's GPUs a job uses: as many as it asks for,
// at most the slot's.
func Share(slot worker.Slot, j *manifest.Job) []int {
	n := min(JobGPUs(j), len(slot.GPUs))
	return append([]int(nil), slot.GPUs[:n]...)
}

// EstimateMemory is a job's GPU memory need, checked against a device's
// free memory before the engine starts: its model's estimate (a
// conservative default until the job's model is resolved, never "no
// check"). The peak reported in each result is the way to tune them.
func EstimateMemory(j *manifest.Job) uint64 {
	if j.Spec == nil || j.Spec.Memory == nil {
		return unresolvedModelMemory
	}
	return j.Spec.Memory(j)
}

// unresolvedModelMemory is assumed for a job whose model is not known.
const unresolvedModelMemory = 16 * gpu.GiB

// DeviceEnv is the environment that shows an engine the GPUs with these
// indices, numbered as nvidia-smi numbers them (PCI bus order); no index
// shows it none.
func DeviceEnv(gpus []int) []string {
	if len(gpus) == 0 {
		return []string{"CUDA_VISIBLE_DEVICES="}
	}
	ids := make([]string, len(gpus))
	for i, v := range gpus {
		ids[i] = strconv.Itoa(v)
	}
	return []string{"CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES=" + strings.Join(ids, ",")}
}

// runnerFor narrows a slot's engine runner to the GPUs the job uses and,
// for more than one, launches the engine under torchrun (one process per
// GPU; --standalone picks a free rendezvous port, so two distributed jobs
// can share a host).
func runnerFor(base *engine.Runner, slot worker.Slot, j *manifest.Job) *engine.Runner {
	r := *base
	r.Env = append([]string(nil), base.Env...)
	share := Share(slot, j)
	if len(share) == 0 {
		return &r
	}
	// exec keeps the last of duplicate variables: this overrides the slot's.
	r.Env = append(r.Env, DeviceEnv(share)...)
	r.Launcher = nil
	if len(share) > 1 {
		r.Launcher = []string{r.Python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", strconv.Itoa(len(share))}
	}
	return &r
}

// watchMemory is what runs around an engine: check that the job's share of
// its slot has the memory the job is estimated to need
// (*gpu.InsufficientMemoryError when not), then sample it. Call done when
// the engine has stopped: it returns the peak per GPU in MiB, for the
// result (empty on a CPU slot).
func watchMemory(ctx context.Context, l gpu.Lister, slot worker.Slot, j *manifest.Job) (done func() map[string]any, err error) {
	share := Share(slot, j)
	if err := gpu.CheckFree(ctx, l, share, EstimateMemory(j)); err != nil {
		return nil, err
	}
	s := gpu.StartSampler(ctx, l, share, 2*time.Second)
	return func() map[string]any { return gpu.PeakResult(s.Stop()) }, nil
}

// runEngine runs one engine command on the job's share of the GPUs, after
// checking their free memory, and records the peak memory it used.
func (c Config) runEngine(ctx context.Context, env *worker.JobEnv, cfg contract.Config, onEvent func(engine.Event)) (map[string]any, error) {
	done, err := watchMemory(ctx, c.gpus(), env.Slot, env.Job)
	if err != nil {
		return nil, err
	}
	base := *c.Engine
	base.Env = append(append([]string(nil), c.Engine.Env...), env.Slot.Env...)
	res, err := c.runChecked(ctx, runnerFor(&base, env.Slot, env.Job), cfg, env.WorkDir, env.LogWriter, onEvent)
	if peak := done(); len(peak) > 0 && res != nil {
		res["gpu_memory_peak"] = peak
	}
	return res, err
}

// runChecked runs cfg with runner once its keys are ones its engine
// command takes (a worker newer than its engines fails here, naming them).
// The config is encoded once: the engine gets what was checked.
func (c Config) runChecked(ctx context.Context, runner *engine.Runner, cfg contract.Config, workDir string, log io.Writer, onEvent func(engine.Event)) (map[string]any, error) {
	name, command := cfg.Engine()
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("engine config: %w", err)
	}
	if err := c.schema().Check(name, command, json.RawMessage(b)); err != nil {
		return nil, err
	}
	return runner.Run(ctx, name, command, json.RawMessage(b), workDir, log, onEvent)
}

// gpus is the host's GPUs as the operator gave them; none when not given.
func (c Config) gpus() gpu.Lister {
	if c.GPUs == nil {
		return gpu.None{Reason: "no GPU lister configured"}
	}
	return c.GPUs
}
