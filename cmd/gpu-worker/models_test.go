package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gpu-worker/handlers"
	"gpu-worker/limits"
)

// `gpu-worker models` prints every description: names, fields, settings.
func TestModelsCommandListsDescriptions(t *testing.T) {
	var out, errb bytes.Buffer
	if code := realMain([]string{"models"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, m := range handlers.Models() {
		if !strings.Contains(out.String(), m.Spec.Name+" (job_type: "+m.Spec.JobType) {
			t.Errorf("%s missing:\n%s", m.Spec.Name, out.String())
		}
		for _, f := range m.Spec.Fields {
			if !strings.Contains(out.String(), f.Key) {
				t.Errorf("%s field %s missing", m.Spec.Name, f.Key)
			}
		}
		for _, s := range m.Settings {
			if !strings.Contains(out.String(), "--"+s.Flag) {
				t.Errorf("%s setting %s missing", m.Spec.Name, s.Flag)
			}
		}
	}
}

// Model settings are flags of run and doctor, with their environment
// variables.
func TestModelSettingsAreFlags(t *testing.T) {
	s, f := newRunFlags("test", &bytes.Buffer{})
	t.Setenv("GPU_WORKER_TTS_VOCODER", "/models/vocos.pt")
	if err := s.Parse([]string{"--tts-base-model", "/models/checkpoint_0.pt"}); err != nil {
		t.Fatal(err)
	}
	cfg := f.handlersConfig(nil, limits.Default())
	if cfg.Settings["tts-base-model"] != "/models/checkpoint_0.pt" || cfg.Settings["tts-vocoder"] != "/models/vocos.pt" {
		t.Errorf("settings %v", cfg.Settings)
	}
}

// The README's table of the knobs' defaults is what the engines' schema
// says: README, `gpu-worker models` and the engines cannot disagree.
func TestREADMEKnobDefaultsAreTheEngines(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if table := knobTable(); !strings.Contains(string(readme), table) {
		t.Errorf("README.md's knob table differs from the engines' defaults; paste `gpu-worker models --markdown`:\n%s", table)
	}
	var out bytes.Buffer
	if code := realMain([]string{"models"}, &out, &out); code != 0 || !strings.Contains(out.String(), "epochs: 1000 epochs") {
		t.Errorf("models does not show StableTTS's 1000 epochs from the schema:\n%s", out.String())
	}
}
