package gpu

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
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
