package main

import (
	"bytes"
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
