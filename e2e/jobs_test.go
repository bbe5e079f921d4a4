package e2e

import (
	"fmt"
	"strings"
	"testing"

	"gpu-worker/manifest"
)

// modelFiles checks a training job's outputs and returns the best model path.
func modelFiles(t *testing.T, e *env, id string, r *manifest.Response, model string) {
	t.Helper()
	want := manifest.JobDir(id) + "/models/" + model
	if r.Result["checkpoint_path"] != want {
		t.Errorf("result.checkpoint_path = %v, want %s", r.Result["checkpoint_path"], want)
	}
	e.lfsFile(want)
	for _, f := range []string{"metrics.csv", "loss.png"} {
		b, ok := e.file(manifest.JobDir(id) + "/models/" + f)
		if !ok || len(b) == 0 {
			t.Errorf("%s missing", f)
		}
	}
	if csv, _ := e.file(manifest.JobDir(id) + "/models/metrics.csv"); !strings.HasPrefix(string(csv), "epoch") {
		t.Errorf("metrics.csv: %.80q", csv)
	}
	if png, _ := e.file(manifest.JobDir(id) + "/models/loss.png"); !strings.HasPrefix(string(png), "\x89PNG") {
		t.Error("loss.png is not a PNG")
	}
	if logs, ok := e.file(manifest.JobDir(id) + "/logs.txt"); !ok || !strings.Contains(string(logs), "job started") || strings.Contains(string(logs), "test-token") {
		t.Errorf("logs.txt missing, incomplete or leaking the token")
	}
	if r.EpochsCompleted == nil || *r.EpochsCompleted < 1 || r.WorkerID == "" || r.Timestamp.IsZero() {
		t.Errorf("response fields: %+v", r)
	}
}

func TestTTSTrainingInferenceAndBoth(t *testing.T) {
	// 6 recorded verses to train on, 2 with text only to synthesize.
	e := newEnv(t, verses(6, 2, 0))
	e.setManifest(job("tts_train", "tts", "training", "StableTTS", "    epochs: 3\n"))
	e.run("w1")
	r := e.wantState("tts_train", manifest.StateCompleted)
	modelFiles(t, e, "tts_train", r, "best_model.pt")
	e.lfsFile(manifest.JobDir("tts_train") + "/models/final_model.pt")
	if _, ok := r.Result["val_mcd"]; !ok {
		t.Errorf("no MCD evaluation in result: %v", r.Result)
	}
	final := e.lastCommitTouching(manifest.ResponsePath("tts_train"))
	if p := paths(final); !p[manifest.JobDir("tts_train")+"/models/best_model.pt"] || !p[manifest.JobDir("tts_train")+"/logs.txt"] {
		t.Errorf("model and log not in the final commit: %v", p)
	}

	e.setManifest(
		job("tts_train", "tts", "training", "StableTTS", "    epochs: 3\n"),
		fmt.Sprintf("  - job_id: tts_infer\n    job_type: tts\n    mode: inference\n    model: {type: StableTTS, size: tiny, base_checkpoint: %s}\n    allow_cpu: true\n    audio_format: ogg\n",
			manifest.JobDir("tts_train")+"/models/best_model.pt"))
	e.run("w1")
	r = e.wantState("tts_infer", manifest.StateCompleted)
	if r.Result["audio_generated"] != 2 {
		t.Fatalf("audio_generated = %v, want 2 (result %v)", r.Result["audio_generated"], r.Result)
	}
	nb := e.notebook()
	generated := 0
	for _, c := range nb.Cells() {
		a, ok := c.Audio()
		if !ok {
			t.Errorf("cell %s still has no audio", c.ID())
			continue
		}
		if g := c.Object().Path("metadata", "attachments", a.ID, "isGenerated"); g != nil && g.Truthy() {
			generated++
			if !strings.HasSuffix(a.URL, ".ogg") || c.SelectedAudioID() != a.ID {
				t.Errorf("attachment %+v, selected %s", a, c.SelectedAudioID())
			}
			_, pointers := codexPaths(a.URL)
			obj := e.lfsFile(pointers)
			if !strings.HasPrefix(string(obj), "OggS") {
				t.Errorf("%s is not Ogg audio", pointers)
			}
		}
	}
	if generated != 2 {
		t.Errorf("%d cells got generated audio, want 2", generated)
	}
	onlyAddsPointers(t, e)
	fc := e.lastCommitTouching(manifest.ResponsePath("tts_infer"))
	if p := paths(fc); !p["files/target/MRK.codex"] {
		t.Errorf("notebook change not in the final commit with response.yaml: %v", p)
	}

	// Both modes in one job; include_verses asks to regenerate a recorded verse.
	e.setManifest(job("tts_both", "tts", "training_and_inference", "StableTTS", "    epochs: 2\n    inference: {include_verses: [\"MRK 1:2\"]}\n"))
	e.run("w1")
	r = e.wantState("tts_both", manifest.StateCompleted)
	modelFiles(t, e, "tts_both", r, "best_model.pt")
	if r.Result["audio_generated"] != 1 {
		t.Errorf("audio_generated = %v, want 1", r.Result["audio_generated"])
	}
	onlyAddsPointers(t, e)
}

// onlyAddsPointers checks that, after the import, commits only ever add
// LFS pointer files at paths that did not exist: a job never rewrites a
// pointer, which the editor's sync would see as both sides changing it. (On
// GitLab a pointer is created under a temporary name and moved into place
// in the same commit.)
func onlyAddsPointers(t *testing.T, e *env) {
	t.Helper()
	const pointers = ".project/attachments/pointers/"
	exists := map[string]bool{}
	added := 0
	for _, c := range e.srv.Commits(e.path) {
		imported := c.Message == "Import project" // newEnv's first commit
		created := map[string]bool{}
		for _, a := range c.Actions {
			if !strings.HasPrefix(a.Path, pointers) && !strings.HasPrefix(a.PreviousPath, pointers) {
				continue
			}
			ok := !exists[a.Path]
			switch a.Kind {
			case "create":
				created[a.Path] = true
			case "move":
				ok = ok && created[a.PreviousPath]
				delete(exists, a.PreviousPath)
				delete(created, a.PreviousPath)
			default:
				ok = false
			}
			if !imported && !ok {
				t.Errorf("commit %q: %s of pointer %s (from %q)", c.Message, a.Kind, a.Path, a.PreviousPath)
			}
			if !imported && a.Kind == "move" {
				added++
			}
			exists[a.Path] = true
		}
		for p := range created {
			if !imported && exists[p] {
				added++ // a plain create (the folder backend's form)
			}
		}
	}
	if added == 0 {
		t.Error("no job added a pointer file")
	}
}

func TestASRTrainingInferenceAndBoth(t *testing.T) {
	// 8 recorded verses with text to train on, 2 recorded without text.
	e := newEnv(t, verses(8, 0, 2))
	e.setManifest(job("asr_train", "asr", "training", "W2V2BERT", "    epochs: 2\n    transmorgrifier: {enabled: false}\n"))
	e.run("w1")
	r := e.wantState("asr_train", manifest.StateCompleted)
	modelFiles(t, e, "asr_train", r, "asr_model.tar")
	if _, ok := r.Result["val_cer"]; !ok {
		t.Errorf("no validation CER: %v", r.Result)
	}

	e.setManifest(fmt.Sprintf("  - job_id: asr_infer\n    job_type: asr\n    mode: inference\n    model: {type: W2V2BERT, base_checkpoint: %s}\n    allow_cpu: true\n",
		manifest.JobDir("asr_train")+"/models/asr_model.tar"))
	e.run("w1")
	r = e.wantState("asr_infer", manifest.StateCompleted)
	n, _ := r.Result["cells_transcribed"].(int)
	if n+intOf(r.Result["empty_transcriptions"]) != 2 {
		t.Fatalf("cells_transcribed = %v (result %v), want 2 attempted", r.Result["cells_transcribed"], r.Result)
	}
	llm := 0
	for _, c := range e.notebook().Cells() {
		edits := c.Object().Path("metadata", "edits").Elems()
		if len(edits) == 0 {
			continue
		}
		if typ, _ := edits[len(edits)-1].Get("type").Str(); typ == "llm-generation" {
			llm++
		}
	}
	if llm != n {
		t.Errorf("%d cells carry an llm-generation edit, want %d", llm, n)
	}

	e.setManifest(job("asr_both", "asr", "training_and_inference", "W2V2BERT", "    epochs: 2\n    transmorgrifier: {enabled: true}\n    inference: {include_verses: [\"MRK 1:1\"]}\n"))
	e.run("w1")
	r = e.wantState("asr_both", manifest.StateCompleted)
	modelFiles(t, e, "asr_both", r, "asr_model.tar")
	if tm, ok := r.Result["transmorgrifier"].(map[string]any); !ok || tm["kept"] == nil || tm["seconds"] == nil {
		t.Errorf("post-correction figures missing: %v", r.Result)
	}
	if _, ok := r.Result["test_cer"]; !ok {
		t.Errorf("no held-out test CER: %v", r.Result)
	}
}

func TestInsufficientDataFailsClearly(t *testing.T) {
	e := newEnv(t, verses(1, 3, 0))
	e.setManifest(job("thin", "tts", "training", "StableTTS", "    epochs: 2\n"))
	e.run("w1")
	r := e.wantState("thin", manifest.StateFailed)
	if r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "needs at least 2 verses with both human text and a usable human recording; the project has 1") {
		t.Fatalf("error_message = %v", r.ErrorMessage)
	}
}

func intOf(v any) int {
	n, _ := v.(int)
	return n
}
