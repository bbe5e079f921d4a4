package e2e

import (
	"fmt"
	"testing"

	"gpu-worker/codex"
	"gpu-worker/demoproject"
	"gpu-worker/manifest"
)

// A model learns only from people: of a project whose cells mix human,
// generated-unvalidated and generated-validated text and audio, training
// takes exactly the human and the validated ones, and says why it left
// the others out.
func TestTrainingSetIsHumanWork(t *testing.T) {
	vs := verses(6, 0, 0)
	add := func(v demoproject.Verse) {
		v.Ref = fmt.Sprintf("MRK 1:%d", len(vs)+1)
		v.Text, v.Record = sentences[len(vs)%len(sentences)], true
		vs = append(vs, v)
	}
	add(demoproject.Verse{GeneratedText: true})
	add(demoproject.Verse{GeneratedText: true})
	add(demoproject.Verse{GeneratedText: true, Validated: true})
	add(demoproject.Verse{GeneratedAudio: true})
	add(demoproject.Verse{GeneratedAudio: true, Validated: true})
	e := newEnv(t, vs)
	e.setManifest(job("human", "tts", "training", "StableTTS", "    epochs: 1\n"))
	e.run("w1")
	r := e.wantState("human", manifest.StateCompleted)
	if got := r.Result["training_verses"]; got != 8 {
		t.Errorf("training_verses = %v, want 8 (6 human + 2 validated)", got)
	}
	skipped, _ := r.Result["training_skipped"].(map[string]any)
	if skipped[codex.ReasonGeneratedText] != 2 || skipped[codex.ReasonGeneratedAudio] != 1 {
		t.Errorf("training_skipped = %v", r.Result["training_skipped"])
	}
}
