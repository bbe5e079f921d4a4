package main

import (
	"os"
	"testing"

	"gpu-worker/engine"
)

// TestMain lets the test binary stand in for gpu-worker as the engine
// sandbox's shim (run starts os.Executable() for it), as main does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == engine.SandboxCommand {
		os.Exit(engine.SandboxMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}
