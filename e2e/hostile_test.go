package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpu-worker/manifest"
)

// plantScript writes, with torch and tarfile, the files a person with push
// rights would plant: pickles whose loading runs `touch <marker>-<name>`,
// and archives that reach out of their folder or carry pickled weights.
const plantScript = `
import io, json, os, sys, tarfile, torch
out, marker, escape = sys.argv[1], sys.argv[2], sys.argv[3]
class Runs:
    def __init__(self, name): self.name = name
    def __reduce__(self): return os.system, ("touch %s-%s" % (marker, self.name),)
def save(name, body):
    torch.save({**body, "payload": Runs(name)}, os.path.join(out, name + ".pt"))
save("tts-resume", {"format": "gpuworker-stabletts-resumable/1", "step": 3})
save("asr-resume", {"arch": "w2v2bert", "vocab": {"a": 1}, "model": {}, "step": 3})
save("mms-resume", {"arch": "wav2vec2", "vocab": {"a": 1}, "model": {}, "step": 3})
save("tts-base", {"encoder.emb.weight": torch.zeros(3, 3)})
def tar(name, members):
    with tarfile.open(os.path.join(out, name + ".tar"), "w") as t:
        for path, kind, data, link in members:
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode = kind, link, 0o644
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
config = (("config.json", tarfile.REGTYPE, json.dumps({"model_type": "wav2vec2"}).encode(), ""))
pickled = io.BytesIO()
torch.save({"w": Runs("weights")}, pickled)
tar("links", [config, ("root", tarfile.SYMTYPE, None, "/"),
              ("root" + escape, tarfile.REGTYPE, b"x", ""),
              ("../../.." + escape, tarfile.REGTYPE, b"x", "")])
tar("pickled", [config, ("pytorch_model.bin", tarfile.REGTYPE, pickled.getvalue(), "")])
tar("mms-adapter", [config, ("adapter.xyz.bin", tarfile.REGTYPE, pickled.getvalue(), "")])
`

// A payload at every place a project file reaches an engine, and a
// playlist disguised as a recording: nothing runs, nothing is written
// outside the job's folder, each job ends with a message naming the
// project file, and the worker goes on to complete a clean job.
func TestHostileProjectFilesRunNothing(t *testing.T) {
	e := newEnv(t, verses(6, 1, 0))
	planted := t.TempDir()
	marker := filepath.Join(t.TempDir(), "ran")
	escape := fmt.Sprintf("/tmp/escaped-%d", time.Now().UnixNano())
	if out, err := exec.Command(python, "-c", plantScript, planted, marker, escape).CombinedOutput(); err != nil {
		t.Fatalf("plant payloads: %v\n%s", err, out)
	}
	mmsBase := hubSnapshot(t, "--architecture", "wav2vec2", "--adapter-languages", "xyz")
	lfs := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(planted, name))
		if err != nil {
			t.Fatal(err)
		}
		return []byte(e.srv.PutLFSObject(b).String())
	}
	playlist := []byte("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n/etc/passwd\n#EXT-X-ENDLIST\n")
	// A claim left by a worker long gone: the next worker takes the job
	// over and resumes from the checkpoint beside it.
	stale := func(id string) []byte {
		r := manifest.Response{WorkerID: "gone", State: manifest.StateRunning, Timestamp: time.Now().Add(-time.Hour)}
		return r.Marshal()
	}
	files := map[string][]byte{
		"files/audio/voice.webm":                  playlist, // a tracked path: stored as an LFS object, as git-lfs pushes it
		"gpu_jobs/job_old/models/best_model.pt":   lfs("tts-base.pt"),
		"gpu_jobs/job_old/models/links.tar":       lfs("links.tar"),
		"gpu_jobs/job_old/models/pickled.tar":     lfs("pickled.tar"),
		"gpu_jobs/job_old/models/mms_adapter.tar": lfs("mms-adapter.tar"),
	}
	for _, id := range []string{"tts-resume", "asr-resume", "mms-resume"} {
		files[manifest.ResponsePath(id)] = stale(id)
		files[manifest.JobDir(id)+"/checkpoints/resume.pt"] = lfs(id + ".pt")
	}
	e.srv.UserCommit(t, e.path, "Plant", files)

	type hostile struct {
		id, typ, mode, model, extra string
		names                       string // the project file the message must name
		says                        string
	}
	mms := "    model: {type: MMS, size: tiny, language: xyz, base_model: " + mmsBase + "%s}\n"
	cases := []hostile{
		{"tts-resume", "tts", "training", "StableTTS", "", manifest.JobDir("tts-resume") + "/checkpoints/resume.pt", "refused"},
		{"asr-resume", "asr", "training", "W2V2BERT", "", manifest.JobDir("asr-resume") + "/checkpoints/resume.pt", "refused"},
		{"mms-resume", "asr", "training", "MMS", fmt.Sprintf(mms, ""), manifest.JobDir("mms-resume") + "/checkpoints/resume.pt", "refused"},
		{"tts-base", "tts", "training", "StableTTS", "    model: {type: StableTTS, size: tiny, base_checkpoint: gpu_jobs/job_old/models/best_model.pt}\n",
			"gpu_jobs/job_old/models/best_model.pt", "refused"},
		{"asr-links", "asr", "training", "W2V2BERT", "    model: {type: W2V2BERT, size: tiny, base_checkpoint: gpu_jobs/job_old/models/links.tar}\n",
			"gpu_jobs/job_old/models/links.tar", "refused"},
		{"asr-pickled", "asr", "training", "W2V2BERT", "    model: {type: W2V2BERT, size: tiny, base_checkpoint: gpu_jobs/job_old/models/pickled.tar}\n",
			"gpu_jobs/job_old/models/pickled.tar", "refused"},
		{"mms-adapter", "asr", "training", "MMS", fmt.Sprintf(mms, ", base_checkpoint: gpu_jobs/job_old/models/mms_adapter.tar"),
			"gpu_jobs/job_old/models/mms_adapter.tar", "refused"},
		{"playlist", "tts", "training_and_inference", "StableTTS", "    voice_reference: files/audio/voice.webm\n",
			"files/audio/voice.webm", "not audio"},
	}
	var doc strings.Builder
	for _, c := range cases {
		entry := job(c.id, c.typ, c.mode, c.model, "    epochs: 1\n")
		if strings.Contains(c.extra, "model:") {
			entry = strings.Replace(entry, fmt.Sprintf("    model: {type: %s, size: tiny}\n", c.model), c.extra, 1)
		} else {
			entry += c.extra
		}
		doc.WriteString(entry)
	}
	doc.WriteString(job("clean", "tts", "training", "StableTTS", "    epochs: 1\n"))
	e.setManifest(doc.String())

	log := e.run("w1", "--claim-timeout", "3s", "--heartbeat-interval", "1s")

	for _, c := range cases {
		r := e.response(c.id)
		msg := ""
		if r.ErrorMessage != nil {
			msg = *r.ErrorMessage
		}
		logs, _ := e.file(manifest.JobDir(c.id) + "/logs.txt")
		if r.State != manifest.StateFailed || !strings.Contains(msg, c.names) || !strings.Contains(msg+string(logs), c.says) {
			t.Errorf("%s: state %s, error_message %q: want failed, naming %s and saying %q\nlogs.txt:\n%s",
				c.id, r.State, msg, c.names, c.says, tail(string(logs)))
		}
		if strings.Contains(msg, e.work) || strings.Contains(string(logs), e.work) {
			t.Errorf("%s: what the team sees names the worker's host paths: %s", c.id, msg)
		}
	}
	e.wantState("clean", manifest.StateCompleted)

	ran, _ := filepath.Glob(marker + "*")
	if len(ran) > 0 {
		t.Errorf("planted code ran: %v", ran)
	}
	if _, err := os.Stat(escape); err == nil {
		os.Remove(escape)
		t.Errorf("an archive wrote %s outside its folder", escape)
	}
	// The work folder holds job folders and nothing else.
	entries, err := os.ReadDir(filepath.Join(e.work, "w1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if !en.IsDir() || !strings.HasPrefix(en.Name(), "job_") {
			t.Errorf("written outside a job's folder: %s", en.Name())
		}
	}
	if t.Failed() {
		t.Logf("worker log:\n%s", tail(log))
	}
}
