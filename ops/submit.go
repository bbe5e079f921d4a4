package ops

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// JobOptions are the fields an operator sets on a new job; zero values are
// left out of the manifest so the worker's defaults apply.
type JobOptions struct {
	Name, Description string
	JobType, Mode     string
	Model             string // a model.type, e.g. StableTTS
	BaseCheckpoint    string
	ModelSize         string
	Epochs            int
	Priority          int
	GPUs              int
	AllowCPU          bool
	TrainInclude      []string
	TrainExclude      []string
	InferInclude      []string
	InferExclude      []string
	VoiceReference    string
	AudioFormat       string
	Timeout           string
}

// JobNode builds a manifest entry from options, in the field order the
// Codex extension writes.
func JobNode(o JobOptions) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	add := func(k string, v *yaml.Node) { m.Content = append(m.Content, scalar(k), v) }
	str := func(k, v string) {
		if v != "" {
			add(k, quoted(v))
		}
	}
	num := func(k string, v int) {
		if v != 0 {
			add(k, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)})
		}
	}
	str("name", o.Name)
	str("description", o.Description)
	if o.JobType != "" {
		add("job_type", scalar(o.JobType))
	}
	if o.Mode != "" {
		add("mode", scalar(o.Mode))
	}
	num("priority", o.Priority)
	if o.Model != "" || o.BaseCheckpoint != "" || o.ModelSize != "" {
		model := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for _, kv := range [][2]string{{"type", o.Model}, {"base_checkpoint", o.BaseCheckpoint}, {"size", o.ModelSize}} {
			if kv[1] != "" {
				model.Content = append(model.Content, scalar(kv[0]), scalar(kv[1]))
			}
		}
		add("model", model)
	}
	num("epochs", o.Epochs)
	num("gpus", o.GPUs)
	filter := func(k string, inc, exc []string) {
		if len(inc) == 0 && len(exc) == 0 {
			return
		}
		f := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for _, kv := range []struct {
			k string
			v []string
		}{{"include_verses", inc}, {"exclude_verses", exc}} {
			if len(kv.v) == 0 {
				continue
			}
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
			for _, s := range kv.v {
				seq.Content = append(seq.Content, quoted(s))
			}
			f.Content = append(f.Content, scalar(kv.k), seq)
		}
		add(k, f)
	}
	filter("training", o.TrainInclude, o.TrainExclude)
	filter("inference", o.InferInclude, o.InferExclude)
	str("voice_reference", o.VoiceReference)
	if o.AudioFormat != "" {
		add("audio_format", scalar(o.AudioFormat))
	}
	str("timeout", o.Timeout)
	if o.AllowCPU {
		add("allow_cpu", boolean(true))
	}
	add("canceled", boolean(false))
	return m
}

// ParseJobFile reads a job entry written by hand (a YAML mapping).
func ParseJobFile(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse job file: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("parse job file: expected a mapping of job fields")
	}
	return doc.Content[0], nil
}

// ErrDuplicateJob reports a job id already in the manifest.
var ErrDuplicateJob = errors.New("job id already in the manifest")

// Submit appends job to the project's manifest (creating the manifest if
// missing) and returns its id. A job_id and submitted_at are added when
// absent. The job is validated as the worker will read it; an invalid one
// is refused, naming every bad field (models resolves the model's own
// fields; nil checks only the common ones). Concurrent edits of the
// manifest are kept: on a conflict the manifest is read again and the job
// appended to the new version.
func Submit(ctx context.Context, p project.Project, models manifest.Catalog, job *yaml.Node, now time.Time) (string, error) {
	if job == nil || job.Kind != yaml.MappingNode {
		return "", errors.New("submit: job is not a mapping")
	}
	entry := cloneNode(job)
	id := ""
	if v := lookup(entry, "job_id"); v != nil {
		id = v.Value
	} else {
		id = NewJobID(now)
		entry.Content = append([]*yaml.Node{scalar("job_id"), quoted(id)}, entry.Content...)
	}
	if lookup(entry, "submitted_at") == nil {
		set(entry, "submitted_at", quoted(now.UTC().Format("2006-01-02T15:04:05.000Z")), "mode")
	}
	if err := validate(entry, models); err != nil {
		return "", err
	}
	err := editManifest(ctx, p, fmt.Sprintf("Submit job %s [skip ci]", id), func(doc *yaml.Node) error {
		if findJob(doc, id) != nil {
			return fmt.Errorf("%w: %s", ErrDuplicateJob, id)
		}
		jobs, err := jobsList(doc)
		if err != nil {
			return err
		}
		jobs.Content = append(jobs.Content, cloneNode(entry))
		return nil
	}, func(doc *yaml.Node) bool { return findJob(doc, id) != nil })
	if err != nil {
		return "", fmt.Errorf("submit job %s: %w", id, err)
	}
	return id, nil
}

// validate parses the entry exactly as the worker will.
func validate(entry *yaml.Node, models manifest.Catalog) error {
	doc, _ := parseDoc([]byte("version: 1\njobs: []\n"))
	jobs, _ := jobsList(doc)
	jobs.Content = append(jobs.Content, entry)
	b, err := encodeDoc(doc)
	if err != nil {
		return err
	}
	m, err := parseWith(models, b)
	if err != nil {
		return fmt.Errorf("invalid job: %w", err)
	}
	if len(m.Skipped) > 0 {
		return fmt.Errorf("invalid job: %s", m.Skipped[0])
	}
	if m.Jobs[0].Invalid != nil {
		return fmt.Errorf("invalid job: %w", m.Jobs[0].Invalid)
	}
	return nil
}

// parseWith reads a manifest, resolving models when a catalog is given.
func parseWith(models manifest.Catalog, data []byte) (*manifest.Manifest, error) {
	if models == nil {
		return manifest.Parse(data)
	}
	return models.Parse(data)
}

func cloneNode(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, k := range n.Content {
		c.Content[i] = cloneNode(k)
	}
	return &c
}
