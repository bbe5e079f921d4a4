// Package manifest reads gpu_jobs/manifest.yaml as the Codex extension writes
// it and reads/writes gpu_jobs/job_<id>/response.yaml.
package manifest

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"gpu-worker/limits"
)

// Path is where a project keeps its job manifest.
const Path = "gpu_jobs/manifest.yaml"

// JobDir is the folder of one job's outputs.
func JobDir(jobID string) string { return "gpu_jobs/job_" + jobID }

// ResponsePath is where a job's state lives.
func ResponsePath(jobID string) string { return JobDir(jobID) + "/response.yaml" }

// Job types and modes the worker knows. Models are described by a
// Catalog of ModelSpecs.
const (
	TTS = "tts"
	ASR = "asr"

	Training             = "training"
	Inference            = "inference"
	TrainingAndInference = "training_and_inference"
)

// Manifest is a parsed manifest. Jobs that failed validation are kept with
// Invalid set, so the worker can claim them and report why.
type Manifest struct {
	Version int
	Jobs    []*Job
	// Skipped lists entries that could not even be identified (no job_id).
	Skipped []string
}

// Filter selects verses: references ("MAT 1:1", "MAT 1", "MAT") or cell ids.
type Filter struct {
	Include []string
	Exclude []string
}

// Job is one manifest entry.
type Job struct {
	ID          string
	Name        string
	Description string
	JobType     string
	Mode        string
	SubmittedAt time.Time
	Priority    int

	ModelType      string // as written; canonical once a Catalog resolved it
	BaseCheckpoint string
	ModelSize      string // tiny | default

	Training         Filter
	IncludeGenerated bool // train also on generated text/audio nobody validated
	Inference        Filter
	AudioFormat      string
	Timeout          time.Time // zero = none
	Canceled         bool
	AllowCPU         bool
	GPUs             int // >1: spread one job over several GPUs

	// Knobs are the training knobs the job set; the engine's defaults
	// apply to the others.
	Knobs                    Knobs
	CheckpointUploadInterval time.Duration

	// Spec is the job's model once a Catalog resolved it; Options holds the
	// model's own fields (see ModelSpec.Fields), defaults included.
	Spec    *ModelSpec
	Options map[string]any

	// Invalid explains why the entry cannot run (every bad field, joined);
	// the worker fails it with this.
	Invalid error

	raw      map[string]any // the entry as written, for Catalog.Resolve
	problems []error
}

// Kind is the handler key of a job.
func (j *Job) Kind() string { return j.JobType + "/" + strings.ToLower(j.ModelType) + "/" + j.Mode }

// Trains reports whether the job's mode includes training.
func (j *Job) Trains() bool { return j.Mode == Training || j.Mode == TrainingAndInference }

// Infers reports whether the job's mode includes inference.
func (j *Job) Infers() bool { return j.Mode == Inference || j.Mode == TrainingAndInference }

// ErrVersion reports a manifest of a version this worker does not read.
var ErrVersion = errors.New("unsupported manifest version")

// Parse reads a manifest within the default limits. An error means the
// whole file is unusable; problems of single jobs are reported on the jobs
// themselves.
func Parse(data []byte) (*Manifest, error) { return ParseWith(data, limits.Default()) }

// ParseWith reads a manifest within l: its size, its YAML aliases and how
// many jobs it lists.
func ParseWith(data []byte, l limits.Limits) (*Manifest, error) {
	if err := limits.CheckBytes(Path, int64(len(data)), l.ManifestBytes, "max-manifest-bytes"); err != nil {
		return nil, err
	}
	root, err := checkYAML(data, "manifest", Path, l.YAMLAliases)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Version any         `yaml:"version"`
		Jobs    []yaml.Node `yaml:"jobs"`
	}
	if err := decodeNode(root, &doc); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	switch v := doc.Version.(type) {
	case int:
		if v != 1 {
			return nil, fmt.Errorf("%w: %d (this worker reads version 1)", ErrVersion, v)
		}
	case nil:
		return nil, fmt.Errorf("%w: missing \"version\" (expected version: 1)", ErrVersion)
	default:
		return nil, fmt.Errorf("%w: %v (expected version: 1)", ErrVersion, v)
	}
	if l.ManifestJobs > 0 && len(doc.Jobs) > l.ManifestJobs {
		return nil, &limits.Exceeded{Path: Path, What: fmt.Sprintf("lists %d jobs", len(doc.Jobs)),
			Limit: fmt.Sprintf("%d jobs", l.ManifestJobs), Setting: "max-manifest-jobs"}
	}
	m := &Manifest{Version: 1}
	seen := map[string]bool{}
	for i, node := range doc.Jobs {
		var raw map[string]any
		if err := node.Decode(&raw); err != nil || raw == nil {
			m.Skipped = append(m.Skipped, fmt.Sprintf("jobs[%d]: not a mapping", i))
			continue
		}
		id := scalarString(raw["job_id"])
		if id == "" {
			m.Skipped = append(m.Skipped, fmt.Sprintf("jobs[%d]: no job_id", i))
			continue
		}
		if !validJobID(id) {
			m.Skipped = append(m.Skipped, fmt.Sprintf("jobs[%d]: job_id %q has characters not allowed in a path", i, id))
			continue
		}
		job := parseJob(id, raw)
		if seen[id] {
			job.problems = []error{fmt.Errorf("job_id %q appears more than once in the manifest", id)}
			job.Invalid = job.problemsError()
		}
		seen[id] = true
		m.Jobs = append(m.Jobs, job)
	}
	return m, nil
}

// Find returns the job with the given id, or nil.
func (m *Manifest) Find(id string) *Job {
	for _, j := range m.Jobs {
		if j.ID == id {
			return j
		}
	}
	return nil
}

// Sorted returns the jobs in the order a worker should consider them:
// higher priority first, then oldest submitted_at, then manifest order.
func (m *Manifest) Sorted() []*Job {
	jobs := append([]*Job(nil), m.Jobs...)
	sort.SliceStable(jobs, func(a, b int) bool {
		ja, jb := jobs[a], jobs[b]
		if ja.Priority != jb.Priority {
			return ja.Priority > jb.Priority
		}
		if ja.SubmittedAt.IsZero() != jb.SubmittedAt.IsZero() {
			return !ja.SubmittedAt.IsZero()
		}
		return ja.SubmittedAt.Before(jb.SubmittedAt)
	})
	return jobs
}

func validJobID(id string) bool {
	if len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for _, r := range id {
		ok := r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}
