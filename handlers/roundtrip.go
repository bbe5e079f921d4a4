package handlers

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"unicode"

	"gpu-worker/audio"
	"gpu-worker/contract"
	"gpu-worker/dataset"
	"gpu-worker/engine"
	"gpu-worker/manifest"
	"gpu-worker/project"
)

// asrArtifact is a trained ASR model an earlier job left in the project.
type asrArtifact struct {
	path   string // in the project
	engine string
	job    string
}

// latestASRModel finds the ASR model of the newest completed ASR job of
// the project, by the artifact names the ASR models write.
func latestASRModel(ctx context.Context, p project.Project) (*asrArtifact, error) {
	engines := map[string]string{} // artifact file name → engine
	for _, m := range Models() {
		if m.Spec.JobType == manifest.ASR && m.Artifact != "" {
			engines[m.Artifact] = m.Spec.Engine
		}
	}
	entries, err := p.ListTree(ctx, "gpu_jobs")
	if errors.Is(err, project.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var best *asrArtifact
	var bestAt int64
	for _, e := range entries {
		dir, name := path.Split(e.Path)
		eng, ok := engines[name]
		if !ok || path.Base(strings.TrimSuffix(dir, "/")) != "models" {
			continue
		}
		jobDir := path.Dir(strings.TrimSuffix(dir, "/"))
		f, err := p.ReadFile(ctx, jobDir+"/response.yaml")
		if err != nil {
			continue
		}
		resp, err := manifest.ParseResponse(f.Content)
		if err != nil || resp.State != manifest.StateCompleted {
			continue
		}
		if at := resp.Timestamp.UnixNano(); best == nil || at > bestAt {
			best, bestAt = &asrArtifact{path: e.Path, engine: eng, job: strings.TrimPrefix(path.Base(jobDir), "job_")}, at
		}
	}
	return best, nil
}

// roundTripCER transcribes synthesised held-out verses with the project's
// newest ASR model and scores the text against what was to be spoken. The
// note says why no figure was computed.
func (r *run) roundTripCER(ctx context.Context, wavs, texts map[string]string) (cer float64, note string) {
	if len(wavs) == 0 {
		return 0, "skipped: no held-out verse was synthesised"
	}
	art, err := latestASRModel(ctx, r.Project)
	if err != nil {
		return 0, "skipped: " + err.Error()
	}
	if art == nil {
		return 0, "skipped: the project has no ASR model from an earlier job"
	}
	model := filepath.Join(r.WorkDir, "roundtrip", path.Base(art.path))
	if err := fetchModel(ctx, r.JobEnv, art.path, model); err != nil {
		return 0, "skipped: " + err.Error()
	}
	dir := filepath.Join(r.WorkDir, "roundtrip", "dataset")
	var entries []dataset.Entry
	ids := make([]string, 0, len(wavs))
	for id := range wavs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		name := fmt.Sprintf("%03d.wav", len(entries))
		synth := filepath.Join(r.WorkDir, "roundtrip", "synthesised", name)
		if err := copyEngineFile(r.WorkDir, wavs[id], synth); err != nil {
			return 0, "skipped: " + err.Error()
		}
		secs, err := audio.Clean(ctx, synth, filepath.Join(dir, name), audio.CleanOptions{SampleRate: 16000})
		if err != nil {
			return 0, "skipped: " + err.Error()
		}
		entries = append(entries, dataset.Entry{ID: id, CellID: id, Text: texts[id], Audio: name, Duration: secs})
	}
	if err := dataset.WriteIndex(dir, entries); err != nil {
		return 0, "skipped: " + err.Error()
	}
	heard := map[string]string{}
	cfg := contract.NewCTCTranscribe(art.engine)
	cfg.Model, cfg.Dataset = model, dir
	_, err = r.engine(ctx, cfg, func(ev engine.Event) {
		if t, ok := ev.Fields["text"].(string); ok && ev.Kind == "item" {
			heard[ev.ID] = t
		}
	})
	if err != nil {
		return 0, "skipped: transcription failed: " + err.Error()
	}
	var refs, hyps []string
	for _, id := range ids {
		refs, hyps = append(refs, texts[id]), append(hyps, heard[id])
	}
	r.out.Result["round_trip_asr_model"] = art.path
	return round(charErrorRate(refs, hyps), 4), ""
}

// charErrorRate is the edit distance between normalised texts over the
// reference length, pooled over all pairs.
func charErrorRate(refs, hyps []string) float64 {
	var errs, total int
	for i := range refs {
		a, b := []rune(normalizeForScoring(refs[i])), []rune(normalizeForScoring(hyps[i]))
		errs += editDistance(a, b)
		total += len(a)
	}
	if total == 0 {
		return 0
	}
	return float64(errs) / float64(total)
}

// normalizeForScoring lower-cases, drops punctuation and collapses spaces,
// as the ASR engines score.
func normalizeForScoring(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPunct(r) {
			return -1
		}
		return unicode.ToLower(r)
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

func editDistance(a, b []rune) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
