// Package ops is what an operator does by hand: list jobs across projects,
// submit and cancel jobs with compare-and-swap commits that keep the rest
// of the manifest as it was, and check a host before it serves jobs.
package ops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"gpu-worker/manifest"
	"gpu-worker/project"
)

// casAttempts bounds re-reads after the manifest changed under an edit.
const casAttempts = 10

// errNoChange: the edit found nothing to do; no commit is made.
var errNoChange = errors.New("no change")

// ErrJobNotFound reports a job id absent from the manifest.
var ErrJobNotFound = errors.New("job not found in the manifest")

// editManifest reads the manifest, lets edit change its YAML tree and
// commits the result guarded by the version it read (create when the file
// is missing). When someone else changed the file meanwhile, it starts over
// from the new version, so their change and ours both survive. After an
// error that leaves open whether the commit landed, landed (may be nil)
// decides from a fresh read.
func editManifest(ctx context.Context, p project.Project, message string,
	edit func(doc *yaml.Node) error, landed func(doc *yaml.Node) bool) error {
	for attempt := 1; ; attempt++ {
		doc, act, err := readManifestDoc(ctx, p)
		if err != nil {
			return err
		}
		if err := edit(doc); err != nil {
			if errors.Is(err, errNoChange) {
				return nil
			}
			return err
		}
		if act.Content, err = encodeDoc(doc); err != nil {
			return err
		}
		_, err = p.Commit(ctx, message, []project.Action{act})
		if err == nil {
			return nil
		}
		if project.ConflictOf(err) == nil {
			if landed != nil {
				if again, _, rerr := readManifestDoc(ctx, p); rerr == nil && landed(again) {
					return nil
				}
			}
			return fmt.Errorf("commit manifest: %w", err)
		}
		if attempt >= casAttempts {
			return fmt.Errorf("commit manifest: still changing after %d attempts: %w", attempt, err)
		}
		select {
		case <-time.After(time.Duration(attempt*attempt) * 20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readManifestDoc returns the manifest's YAML tree and the commit action
// that will replace it (content still to fill in).
func readManifestDoc(ctx context.Context, p project.Project) (*yaml.Node, project.Action, error) {
	f, err := p.ReadFile(ctx, manifest.Path)
	if errors.Is(err, project.ErrNotFound) {
		doc, _ := parseDoc([]byte("version: 1\njobs: []\n"))
		return doc, project.Action{Kind: project.Create, Path: manifest.Path}, nil
	}
	if err != nil {
		return nil, project.Action{}, fmt.Errorf("read manifest: %w", err)
	}
	doc, err := parseDoc(f.Content)
	if err != nil {
		return nil, project.Action{}, err
	}
	// Refuse versions this worker does not know rather than rewrite them
	// (the full parse only to phrase the refusal).
	if v := lookup(doc.Content[0], "version"); v == nil || v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Value != "1" {
		if _, err := manifest.Parse(f.Content); err != nil {
			return nil, project.Action{}, err
		}
		return nil, project.Action{}, fmt.Errorf("%w: %s", manifest.ErrVersion, v.Value)
	}
	return doc, project.Action{Kind: project.Update, Path: manifest.Path, Guard: f.Guard}, nil
}

func parseDoc(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("parse manifest: not a mapping")
	}
	return &doc, nil
}

// encodeDoc writes YAML the way the Codex extension does: 2-space indent.
func encodeDoc(doc *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	e := yaml.NewEncoder(&b)
	e.SetIndent(2)
	if err := e.Encode(doc); err != nil {
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	e.Close()
	return b.Bytes(), nil
}

// jobsList returns the manifest's jobs sequence, making one if needed.
func jobsList(doc *yaml.Node) (*yaml.Node, error) {
	root := doc.Content[0]
	v := lookup(root, "jobs")
	switch {
	case v == nil:
		v = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		root.Content = append(root.Content, scalar("jobs"), v)
	case v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Value == ""):
		*v = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", LineComment: v.LineComment}
	case v.Kind != yaml.SequenceNode:
		return nil, errors.New("manifest: jobs is not a list")
	}
	// "jobs: []" becomes a block list once it has entries, as clients write it.
	v.Style &^= yaml.FlowStyle
	return v, nil
}

// findJob returns the mapping of the job with the given id, or nil.
func findJob(doc *yaml.Node, id string) *yaml.Node {
	v := lookup(doc.Content[0], "jobs")
	if v == nil || v.Kind != yaml.SequenceNode {
		return nil
	}
	for _, j := range v.Content {
		if j.Kind != yaml.MappingNode {
			continue
		}
		if k := lookup(j, "job_id"); k != nil && k.Kind == yaml.ScalarNode && k.Value == id {
			return j
		}
	}
	return nil
}

// lookup returns the value of key in a mapping node, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// set puts key: value in a mapping, replacing an existing value in place
// (its comments stay) or appending, or inserting after the key after.
func set(m *yaml.Node, key string, value *yaml.Node, after string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			value.LineComment = m.Content[i+1].LineComment
			m.Content[i+1] = value
			return
		}
	}
	at := len(m.Content)
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == after {
			at = i + 2
		}
	}
	m.Content = append(m.Content[:at], append([]*yaml.Node{scalar(key), value}, m.Content[at:]...)...)
}

func scalar(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

func quoted(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Style: yaml.DoubleQuotedStyle}
}

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

// NewJobID makes an id the way the Codex extension does: the time in
// milliseconds in base 36, "_", random hex.
func NewJobID(now time.Time) string {
	var b [5]byte
	rand.Read(b[:])
	return strconv.FormatInt(now.UnixMilli(), 36) + "_" + hex.EncodeToString(b[:])
}
