package gpu

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func fourGPUs() []Device {
	var out []Device
	for i := 0; i < 4; i++ {
		out = append(out, Device{Index: i, Name: "H100", MemTotal: 80 * GiB, MemFree: 80 * GiB, Available: true})
	}
	return out
}

func TestParseSlots(t *testing.T) {
	devs := fourGPUs()
	devs[2].Available = false // a lost GPU is never scheduled
	cases := []struct {
		spec string
		want [][]int
	}{
		{"", [][]int{{0}, {1}, {3}}},
		{"all", [][]int{{0}, {1}, {3}}},
		{"none", nil},
		{"3,0", [][]int{{3}, {0}}},
		{"1+0, 3", [][]int{{0, 1}, {3}}},
	}
	for _, c := range cases {
		got, err := ParseSlots(c.spec, devs)
		if err != nil {
			t.Fatalf("%q: %v", c.spec, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %v, want %v", c.spec, got, c.want)
		}
	}
	for _, bad := range []string{"2", "7", "0,0", "0+1,1", "x", "-1"} {
		if _, err := ParseSlots(bad, devs); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	if _, err := ParseSlots("all", nil); !errors.Is(err, ErrNoDevice) {
		t.Errorf("all on a host without GPUs: %v", err)
	}
	if g, err := ParseSlots("auto", nil); err != nil || len(g) != 0 {
		t.Errorf("auto on a host without GPUs: %v %v", g, err)
	}
}

func TestCheckFree(t *testing.T) {
	devs := fourGPUs()
	devs[1].MemFree = 2 * GiB
	l := Static(devs)
	ctx := context.Background()
	if err := CheckFree(ctx, l, []int{0, 2}, 10*GiB); err != nil {
		t.Errorf("enough memory: %v", err)
	}
	err := CheckFree(ctx, l, []int{0, 1}, 10*GiB)
	var ime *InsufficientMemoryError
	if !errors.As(err, &ime) || ime.Device != 1 || !strings.Contains(err.Error(), "2.0 GiB free") {
		t.Errorf("short device: %v", err)
	}
	if err := CheckFree(ctx, l, []int{9}, GiB); !errors.Is(err, ErrNoDevice) {
		t.Errorf("missing device: %v", err)
	}
	if err := CheckFree(ctx, None{}, nil, 10*GiB); err != nil {
		t.Errorf("cpu slot: %v", err)
	}
}
