package manifest

import (
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"time"
)

// fieldError is a problem with one field, phrased for the translation team.
type fieldError struct {
	field, why string
}

func (e *fieldError) Error() string { return e.field + ": " + e.why }

// problemsError joins every problem of a job into one message.
type problemsError []error

func (e problemsError) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (e problemsError) Unwrap() []error { return e }

func (j *Job) problemsError() error {
	if len(j.problems) == 0 {
		return nil
	}
	return problemsError(j.problems)
}

// parser collects every field error while decoding a job.
type parser struct {
	errs []error
}

// fail records a field's problem; a field reports its first problem only.
func (p *parser) fail(field, format string, args ...any) {
	for _, e := range p.errs {
		if fe, ok := e.(*fieldError); ok && fe.field == field {
			return
		}
	}
	p.errs = append(p.errs, &fieldError{field, fmt.Sprintf(format, args...)})
}

// parseJob reads the fields every model shares; the model's own fields are
// read by Catalog.Resolve from the kept entry.
func parseJob(id string, raw map[string]any) *Job {
	p := &parser{}
	j := &Job{ID: id, raw: raw}
	j.Name = p.str(raw, "name")
	j.Description = p.str(raw, "description")

	j.JobType = strings.ToLower(strings.TrimSpace(p.str(raw, "job_type")))
	switch j.JobType {
	case TTS, ASR:
	case "":
		p.fail("job_type", "missing (expected tts or asr)")
	default:
		p.fail("job_type", "%q is not a job type (expected tts or asr)", j.JobType)
	}
	j.Mode = strings.ToLower(strings.TrimSpace(p.str(raw, "mode")))
	switch j.Mode {
	case Training, Inference, TrainingAndInference:
	case "":
		p.fail("mode", "missing (expected training, inference or training_and_inference)")
	default:
		p.fail("mode", "%q is not a mode (expected training, inference or training_and_inference)", j.Mode)
	}
	if s := p.str(raw, "submitted_at"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			p.fail("submitted_at", "%q is not an ISO 8601 time", s)
		}
		j.SubmittedAt = t
	}
	j.Priority = p.int(raw, "priority", math.MinInt32, math.MaxInt32)

	model := p.mapping(raw, "model")
	j.ModelType = strings.TrimSpace(p.str(model, "model.type"))
	j.BaseCheckpoint = p.str(model, "model.base_checkpoint")
	if j.BaseCheckpoint != "" {
		if err := ValidateRepoPath(j.BaseCheckpoint, "gpu_jobs/"); err != nil {
			p.fail("model.base_checkpoint", "%v", err)
		}
	}
	if j.Mode == Inference && j.BaseCheckpoint == "" {
		p.fail("model.base_checkpoint", "required for inference (the trained model to use, e.g. gpu_jobs/job_<id>/models/best_model.pt)")
	}
	j.ModelSize = strings.ToLower(p.str(model, "model.size"))
	switch j.ModelSize {
	case "", "default", "tiny":
	default:
		p.fail("model.size", "%q is not a size (expected tiny or default)", j.ModelSize)
	}
	j.GPUs = p.int(model, "model.gpus", 0, 64)
	if g := p.int(raw, "gpus", 0, 64); g > 0 {
		j.GPUs = g
	}

	j.Knobs.Epochs = p.optInt(raw, "epochs", 1, 1_000_000)
	j.Training = p.filter(raw, "training")
	j.IncludeGenerated = p.bool(p.mapping(raw, "training"), "training.include_generated")
	inf := p.mapping(raw, "inference")
	j.Inference = p.filter(raw, "inference")

	j.AudioFormat = strings.ToLower(p.str(raw, "audio_format"))
	if j.AudioFormat == "" {
		j.AudioFormat = strings.ToLower(p.str(inf, "inference.audio_format"))
	}
	switch j.AudioFormat {
	case "":
		j.AudioFormat = "webm"
	case "wav", "ogg", "mp3", "webm":
	default:
		p.fail("audio_format", "%q is not supported (expected wav, ogg, mp3 or webm)", j.AudioFormat)
	}
	if s := p.str(raw, "timeout"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			p.fail("timeout", "%q is not an ISO 8601 time such as 2027-01-01T00:00:00Z", s)
		}
		j.Timeout = t
	}
	j.Canceled = p.bool(raw, "canceled")
	j.AllowCPU = p.bool(raw, "allow_cpu")

	j.Knobs.BatchSize = p.optInt(raw, "batch_size", 1, 4096)
	j.Knobs.LearningRate = p.optFloat(raw, "learning_rate", 0, 1)
	j.Knobs.ValSplit = p.optFloat(raw, "val_split", 0, 0.9)
	j.Knobs.SaveInterval = p.optInt(raw, "save_interval", 1, 1_000_000)
	j.Knobs.GradientAccumulationSteps = p.optInt(raw, "gradient_accumulation_steps", 1, 1024)
	j.Knobs.WarmupSteps = p.optInt(raw, "warmup_steps", 0, 10_000_000)
	j.CheckpointUploadInterval = p.interval(raw, "checkpoint_upload_interval")
	j.problems = p.errs
	j.Invalid = j.problemsError()
	return j
}

// ValidateRepoPath checks a path a user wrote in the manifest: relative,
// clean, no "..", and under prefix when one is given.
func ValidateRepoPath(p, prefix string) error {
	switch {
	case strings.Contains(p, ".."):
		return fmt.Errorf("%q must not contain \"..\"", p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q must be relative to the project root", p)
	case strings.Contains(p, "\\") || strings.ContainsRune(p, 0):
		return fmt.Errorf("%q contains characters not allowed in a path", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q is not a clean path (try %q)", p, path.Clean(p))
	case prefix != "" && !strings.HasPrefix(p, prefix):
		return fmt.Errorf("%q must be under %s", p, prefix)
	}
	return nil
}

func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("bad time %q", s)
}

func (p *parser) mapping(m map[string]any, key string) map[string]any {
	if m == nil {
		return nil
	}
	v, ok := m[leaf(key)]
	if !ok || v == nil {
		return nil
	}
	mm, ok := v.(map[string]any)
	if !ok {
		p.fail(key, "must be a mapping, got %v", v)
		return nil
	}
	return mm
}

func (p *parser) str(m map[string]any, key string) string {
	if m == nil {
		return ""
	}
	v, ok := m[leaf(key)]
	if !ok || v == nil {
		return ""
	}
	switch v.(type) {
	case map[string]any, []any:
		p.fail(key, "must be a single value, got %v", v)
		return ""
	}
	return scalarString(v)
}

func (p *parser) int(m map[string]any, key string, lo, hi int) int {
	if m == nil {
		return 0
	}
	v, ok := m[leaf(key)]
	if !ok || v == nil {
		return 0
	}
	var n int
	switch x := v.(type) {
	case int:
		n = x
	case float64:
		if x != math.Trunc(x) {
			p.fail(key, "must be a whole number, got %v", x)
			return 0
		}
		n = int(x)
	case string:
		i, err := strconv.Atoi(strings.TrimSpace(x))
		if err != nil {
			p.fail(key, "must be a whole number, got %q", x)
			return 0
		}
		n = i
	default:
		p.fail(key, "must be a whole number, got %v", v)
		return 0
	}
	if n < lo || n > hi {
		p.fail(key, "must be between %d and %d, got %d", lo, hi, n)
		return 0
	}
	return n
}

func (p *parser) float(m map[string]any, key string, lo, hi float64) float64 {
	if m == nil {
		return 0
	}
	v, ok := m[leaf(key)]
	if !ok || v == nil {
		return 0
	}
	var f float64
	switch x := v.(type) {
	case int:
		f = float64(x)
	case float64:
		f = x
	case string:
		g, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			p.fail(key, "must be a number, got %q", x)
			return 0
		}
		f = g
	default:
		p.fail(key, "must be a number, got %v", v)
		return 0
	}
	if math.IsNaN(f) || f <= lo || f > hi {
		p.fail(key, "must be greater than %g and at most %g, got %g", lo, hi, f)
		return 0
	}
	return f
}

// optInt is int for a knob: nil when the entry leaves it out (or it is
// invalid, which is recorded), so 0 can be a value of its own.
func (p *parser) optInt(m map[string]any, key string, lo, hi int) *int {
	if m == nil || m[leaf(key)] == nil {
		return nil
	}
	before := len(p.errs)
	n := p.int(m, key, lo, hi)
	if len(p.errs) > before {
		return nil
	}
	return &n
}

// optFloat is float for a knob: nil when left out or invalid.
func (p *parser) optFloat(m map[string]any, key string, lo, hi float64) *float64 {
	if m == nil || m[leaf(key)] == nil {
		return nil
	}
	before := len(p.errs)
	f := p.float(m, key, lo, hi)
	if len(p.errs) > before {
		return nil
	}
	return &f
}

// interval reads minutes (a number) or a duration such as "90s" or "1h".
func (p *parser) interval(m map[string]any, key string) time.Duration {
	v, ok := m[leaf(key)]
	if !ok || v == nil {
		return 0
	}
	if s, isStr := v.(string); isStr {
		if d, err := time.ParseDuration(strings.TrimSpace(s)); err == nil && d > 0 {
			return d
		}
	}
	if mins := p.int(m, key, 1, 100_000); mins > 0 {
		return time.Duration(mins) * time.Minute
	}
	return 0
}

func (p *parser) bool(m map[string]any, key string) bool {
	if m == nil {
		return false
	}
	v, ok := m[leaf(key)]
	if !ok || v == nil {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		p.fail(key, "must be true or false, got %v", v)
	}
	return b
}

func (p *parser) filter(m map[string]any, key string) Filter {
	sec := p.mapping(m, key)
	return Filter{
		Include: p.list(sec, key+".include_verses"),
		Exclude: p.list(sec, key+".exclude_verses"),
	}
}

func (p *parser) list(m map[string]any, key string) []string {
	if m == nil {
		return nil
	}
	v, ok := m[leaf(key)]
	if !ok || v == nil {
		return nil
	}
	items, ok := v.([]any)
	if !ok {
		p.fail(key, "must be a list, got %v", v)
		return nil
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		s := strings.TrimSpace(scalarString(it))
		if s == "" {
			p.fail(key, "item %d is empty", i+1)
			continue
		}
		out = append(out, s)
	}
	return out
}

func leaf(key string) string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[i+1:]
	}
	return key
}

func scalarString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	default:
		return fmt.Sprint(x)
	}
}
