package gpu

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/worker"
)

// ParseSlots reads a --gpus value against the host's devices and returns
// the GPU groups, one per slot:
//
//	"" | "auto" | "all"  one slot per GPU (none when the host has no GPU)
//	"none"               no GPU slot (CPU only)
//	"0,1,3"              one slot per listed GPU
//	"0+1,2+3"            a slot spanning GPUs 0 and 1, another 2 and 3
//
// A slot of several GPUs runs a job that asks for several (gpus: N) as one
// distributed run.
func ParseSlots(spec string, devs []Device) ([][]int, error) {
	avail := indicesOf(devs)
	spec = strings.TrimSpace(strings.ToLower(spec))
	switch spec {
	case "", "auto", "all":
		out := make([][]int, 0, len(avail))
		for _, i := range avail {
			out = append(out, []int{i})
		}
		if spec == "all" && len(out) == 0 {
			return nil, fmt.Errorf("--gpus all: %w on this host", ErrNoDevice)
		}
		return out, nil
	case "none", "cpu":
		return nil, nil
	}
	have := map[int]bool{}
	for _, i := range avail {
		have[i] = true
	}
	used := map[int]bool{}
	var out [][]int
	for _, group := range strings.Split(spec, ",") {
		var g []int
		for _, part := range strings.Split(group, "+") {
			part = strings.TrimSpace(part)
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 {
				return nil, fmt.Errorf("--gpus %q: %q is not a GPU index (expected all, none, or indices like 0,1 or 0+1,2+3)", spec, part)
			}
			if !have[i] {
				return nil, fmt.Errorf("--gpus %q: GPU %d: %w (this host has %s)", spec, i, ErrNoDevice, describe(avail))
			}
			if used[i] {
				return nil, fmt.Errorf("--gpus %q: GPU %d is named twice", spec, i)
			}
			used[i] = true
			g = append(g, i)
		}
		sort.Ints(g)
		out = append(out, g)
	}
	return out, nil
}

func describe(avail []int) string {
	if len(avail) == 0 {
		return "no usable GPU"
	}
	s := make([]string, len(avail))
	for i, v := range avail {
		s[i] = strconv.Itoa(v)
	}
	return "GPUs " + strings.Join(s, ",")
}

// BuildSlots turns GPU groups into worker slots. Each slot's engines see
// only its GPUs, numbered as NVML numbers them. No group gives one CPU slot
// whose engines see no GPU at all.
func BuildSlots(groups [][]int) []worker.Slot {
	if len(groups) == 0 {
		return []worker.Slot{{Name: "cpu", Env: []string{"CUDA_VISIBLE_DEVICES="}}}
	}
	out := make([]worker.Slot, 0, len(groups))
	for _, g := range groups {
		ids := make([]string, len(g))
		for i, v := range g {
			ids[i] = strconv.Itoa(v)
		}
		out = append(out, worker.Slot{
			Name: "gpu" + strings.Join(ids, "+"),
			Env:  []string{"CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES=" + strings.Join(ids, ",")},
			GPUs: append([]int(nil), g...),
		})
	}
	return out
}

// Widest is the most GPUs any slot has.
func Widest(slots []worker.Slot) int {
	n := 0
	for _, s := range slots {
		n = max(n, len(s.GPUs))
	}
	return n
}

// JobGPUs is how many GPUs a job asks for (at least one).
func JobGPUs(j *manifest.Job) int { return max(j.GPUs, 1) }

// Share is the part of a slot's GPUs a job uses: as many as it asks for,
// at most the slot's.
func Share(slot worker.Slot, j *manifest.Job) []int {
	n := min(JobGPUs(j), len(slot.GPUs))
	return append([]int(nil), slot.GPUs[:n]...)
}

// RunnerFor narrows a slot's engine runner to the GPUs the job uses and,
// for more than one, launches the engine under torchrun (one process per
// GPU; --standalone picks a free rendezvous port, so two distributed jobs
// can share a host).
func RunnerFor(base *engine.Runner, slot worker.Slot, j *manifest.Job) *engine.Runner {
	r := *base
	r.Env = append([]string(nil), base.Env...)
	share := Share(slot, j)
	if len(share) == 0 {
		return &r
	}
	ids := make([]string, len(share))
	for i, v := range share {
		ids[i] = strconv.Itoa(v)
	}
	// exec keeps the last of duplicate variables: this overrides the slot's.
	r.Env = append(r.Env, "CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES="+strings.Join(ids, ","))
	r.Launcher = nil
	if len(share) > 1 {
		r.Launcher = []string{r.Python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", strconv.Itoa(len(share))}
	}
	return &r
}
