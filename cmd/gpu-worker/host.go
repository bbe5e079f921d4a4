package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"gpu-worker/gpu"
	"gpu-worker/handlers"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// host is what this machine can run.
type host struct {
	ffmpeg  error
	engines error
	// probed closes when engines is known (nil: known from the start).
	probed    <-chan struct{}
	lister    gpu.Lister
	gpuReason string
	allowCPU  bool
	memCheck  bool
	slots     []worker.Slot
	widest    int
}

// probeHost checks ffmpeg, discovers GPUs and builds the slots --gpus asks
// for, and starts checking the engines' environment in the background
// (canRun waits for it). Only a --gpus value the host cannot satisfy is an
// error; anything else missing makes the host claim nothing it cannot run.
func probeHost(ctx context.Context, python, enginesDir, gpusFlag string, allowCPU, memCheck bool, log *slog.Logger) (*host, error) {
	h := &host{allowCPU: allowCPU, memCheck: memCheck}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		h.ffmpeg = errors.New("ffmpeg not found (install it: apt-get install ffmpeg)")
		log.Warn("this host cannot run jobs", "reason", h.ffmpeg)
	}
	probed := make(chan struct{})
	h.probed = probed
	go func() {
		defer close(probed)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(pctx, python, "-c", "import torch, gpuworker_engines")
		cmd.Dir = enginesDir
		if err := cmd.Run(); err != nil {
			h.engines = fmt.Errorf("engines environment not usable with %s: %v (run scripts/engines-env.sh)", python, err)
			log.Warn("this host cannot run jobs", "reason", h.engines)
		}
	}()
	h.lister, h.gpuReason = gpu.Discover()
	devs, err := h.lister.Devices(ctx)
	if err != nil {
		return nil, fmt.Errorf("list GPUs: %w", err)
	}
	groups, err := gpu.ParseSlots(gpusFlag, devs)
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		log.Info("no GPU", "reason", h.gpuReason, "allow_cpu", allowCPU)
	}
	h.slots = buildSlots(groups)
	h.widest = widest(h.slots)
	return h, nil
}

// canRun: engines and ffmpeg present; on a CPU-only host only jobs allowed
// on the CPU (by the operator with --allow-cpu, or by the job itself); on a
// GPU host a slot wide enough for the job whose GPUs have the memory the
// job is estimated to need.
func (h *host) canRun(j *manifest.Job) error {
	if h.probed != nil {
		<-h.probed
	}
	if h.ffmpeg != nil {
		return h.ffmpeg
	}
	if h.engines != nil {
		return h.engines
	}
	if h.widest == 0 {
		if !h.allowCPU && !j.AllowCPU {
			return errors.New("no GPU on this host (start with --allow-cpu to run jobs on the CPU)")
		}
		return nil
	}
	if n := handlers.JobGPUs(j); n > h.widest {
		return fmt.Errorf("job asks for %d GPUs; the widest slot here has %d (group GPUs with --gpus 0+1,...)", n, h.widest)
	}
	if !h.memCheck {
		return nil
	}
	need := handlers.EstimateMemory(j)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last error
	for _, s := range h.slots {
		if len(s.GPUs) < handlers.JobGPUs(j) {
			continue
		}
		if last = gpu.CheckFree(ctx, h.lister, handlers.Share(s, j), need); last == nil {
			return nil
		}
	}
	return last
}

// buildSlots turns the GPU groups of --gpus into the worker's slots. Each
// slot's engines see only its GPUs, numbered as NVML numbers them. No group
// gives one CPU slot whose engines see no GPU at all.
func buildSlots(groups [][]int) []worker.Slot {
	if len(groups) == 0 {
		return []worker.Slot{{Name: "cpu", Env: handlers.DeviceEnv(nil)}}
	}
	out := make([]worker.Slot, 0, len(groups))
	for _, g := range groups {
		ids := make([]string, len(g))
		for i, v := range g {
			ids[i] = strconv.Itoa(v)
		}
		out = append(out, worker.Slot{
			Name: "gpu" + strings.Join(ids, "+"),
			Env:  handlers.DeviceEnv(g),
			GPUs: append([]int(nil), g...),
		})
	}
	return out
}

// widest is the most GPUs any slot has.
func widest(slots []worker.Slot) int {
	n := 0
	for _, s := range slots {
		n = max(n, len(s.GPUs))
	}
	return n
}
