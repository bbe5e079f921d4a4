package gpu

import (
	"context"
	"testing"
)

// TestDiscoverOnThisHost opens the real NVML: a host without the driver
// gets no devices and a reason, never a panic; a host with GPUs lists them.
func TestDiscoverOnThisHost(t *testing.T) {
	l, reason := Discover()
	devs, err := l.Devices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if reason != "" {
		if len(devs) != 0 {
			t.Errorf("reason %q but %d devices", reason, len(devs))
		}
		t.Logf("no GPU: %s", reason)
		return
	}
	if len(devs) == 0 || devs[0].MemTotal == 0 {
		t.Errorf("NVML opened but devices unreadable: %+v", devs)
	}
	for _, d := range devs {
		t.Logf("GPU %d %s: %d MiB used of %d MiB", d.Index, d.Name, d.MemUsed>>20, d.MemTotal>>20)
	}
}
