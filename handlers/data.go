package handlers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"gpu-worker/audio"
	"gpu-worker/codex"
	"gpu-worker/dataset"
	"gpu-worker/project"
	"gpu-worker/worker"
)

// sources turns selected cells into dataset inputs; ids are unique per cell.
func sources(items []codex.Item) []dataset.Source {
	out := make([]dataset.Source, len(items))
	for i, it := range items {
		out[i] = dataset.Source{ID: it.CellID, CellID: it.CellID, Reference: it.Reference, Text: it.Text,
			FilesPath: it.FilesPath, PointersPath: it.PointersPath}
	}
	return out
}

// buildDataset fetches and cleans the items' audio into <work>/<name>.
// Downloads share one cache per job, so training and inference fetch a
// recording once.
func (r *run) buildDataset(ctx context.Context, items []codex.Item, name string, rate int) (*dataset.Result, string, error) {
	env := r.JobEnv
	dir := filepath.Join(env.WorkDir, name)
	env.Report(worker.Progress{Message: fmt.Sprintf("preparing %d recordings", len(items))})
	res, err := dataset.Build(ctx, env.Project, sources(items), dataset.Options{
		Dir:       dir,
		CacheDir:  filepath.Join(env.WorkDir, "download-cache"),
		Clean:     r.cleanOptions(rate),
		NeedAudio: true,
		Logger:    env.Log,
		Name:      env.Name,
	})
	if err != nil {
		return nil, "", fmt.Errorf("prepare audio: %w", err)
	}
	env.Log.Info("dataset ready", "dir", dir, "items", len(res.Items), "seconds", math.Round(res.TotalSeconds), "rejected", res.Rejected)
	return res, dir, nil
}

// cleanOptions prepare a recording for an engine at rate, within the
// worker's bound on its length.
func (r *run) cleanOptions(rate int) audio.CleanOptions {
	return audio.CleanOptions{SampleRate: rate, Trim: true, Normalize: true, MaxSeconds: r.cfg.limits().RecordingSeconds}
}

// describeTraining records the training set in a job's result.
func describeTraining(result map[string]any, ds *dataset.Result) {
	result["training_verses"] = len(ds.Items)
	result["training_audio_seconds"] = round(ds.TotalSeconds, 1)
	if len(ds.Rejected) > 0 {
		result["rejected_recordings"] = ds.Rejected
	}
}

// voiceReference returns a clean WAV of the voice to synthesize with: the
// job's voice_reference, else the recording of the project that suits
// best (closest to six seconds) among trainSet or the project's cells.
func voiceReference(ctx context.Context, r *run, rate int) (string, error) {
	env, trainSet, trainDir := r.JobEnv, r.trainSet, r.trainDir
	dst := filepath.Join(env.WorkDir, "voice_reference.wav")
	if ref := env.Job.OptString("voice_reference"); ref != "" {
		f, err := env.Project.ReadFile(ctx, ref)
		if errors.Is(err, project.ErrNotFound) {
			return "", fmt.Errorf("voice_reference %s does not exist in the project", ref)
		}
		if err != nil {
			return "", fmt.Errorf("read voice_reference: %w", err)
		}
		raw := filepath.Join(env.WorkDir, "voice_reference_source"+path.Ext(ref))
		env.Name(raw, ref)
		if ptr, perr := project.ParsePointer(f.Content); perr == nil {
			err = env.Project.GetLFS(ctx, ptr, raw)
		} else {
			err = os.WriteFile(raw, f.Content, 0o644)
		}
		if err != nil {
			return "", fmt.Errorf("fetch voice_reference %s: %w", ref, err)
		}
		if _, err := audio.Clean(ctx, raw, dst, r.cleanOptions(rate)); err != nil {
			return "", fmt.Errorf("voice_reference %s: %w", ref, err)
		}
		return dst, nil
	}
	if trainSet == nil {
		items := codex.SelectTraining(r.nbs, codex.Filter{})
		if len(items) == 0 {
			return "", errors.New("no voice_reference given and the project has no recorded verse to take the voice from")
		}
		if len(items) > 12 {
			items = items[:12]
		}
		var err error
		trainSet, trainDir, err = r.buildDataset(ctx, items, "voice-candidates", rate)
		if err != nil {
			return "", fmt.Errorf("find a voice reference: %w", err)
		}
	}
	best := bestVoice(trainSet.Items)
	env.Log.Info("voice reference chosen from the project's recordings", "cell", best.CellID, "reference", best.Reference, "seconds", best.Duration)
	return filepath.Join(trainDir, best.Audio), nil
}

// bestVoice prefers a recording near six seconds: long enough to carry the
// voice, short enough to be one clean sentence.
func bestVoice(entries []dataset.Entry) dataset.Entry {
	sorted := append([]dataset.Entry(nil), entries...)
	sort.SliceStable(sorted, func(a, b int) bool {
		return math.Abs(sorted[a].Duration-6) < math.Abs(sorted[b].Duration-6)
	})
	return sorted[0]
}

// skipLines formats skipped cells for the log.
func skipLines(skips []codex.Skip) string {
	var b strings.Builder
	for i, s := range skips {
		if i == 20 {
			fmt.Fprintf(&b, "… and %d more", len(skips)-20)
			break
		}
		fmt.Fprintf(&b, "%s %s: %s; ", s.Notebook, or(s.Reference, s.CellID), s.Reason)
	}
	return b.String()
}
