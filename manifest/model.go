package manifest

import (
	"fmt"
	"sort"
	"strings"

	"gpu-worker/limits"
)

// ModelSpec is what the manifest knows of one model: how clients spell it,
// which job type it serves, the fields it accepts beyond the common ones,
// its defaults and its memory need. The handlers package declares one per
// model; validation, help texts, doctor and the GPU memory guard read it.
type ModelSpec struct {
	Name    string   // canonical model.type, e.g. "StableTTS"
	Aliases []string // other spellings; compared without case and separators
	JobType string   // TTS or ASR
	Engine  string   // the Python engine package that runs it
	Summary string   // one line for help texts
	Licence string   // of the published weights a job starts from
	Fields  []Field  // model-specific manifest fields
	// Memory estimates the GPU memory in bytes a job needs, checked against
	// a device's free memory before the job is claimed.
	Memory func(j *Job) uint64
	// Check reports problems that span fields (e.g. what inference needs).
	Check func(j *Job) []error
}

// Knobs are the common training knobs a job may set. nil is "the engine's
// default": the engines hold every default (see package contract), so 0
// is a value like any other (warmup_steps: 0 is no warmup).
type Knobs struct {
	Epochs                    *int
	BatchSize                 *int
	GradientAccumulationSteps *int
	WarmupSteps               *int
	SaveInterval              *int
	LearningRate              *float64
	ValSplit                  *float64
}

// FieldKind is how a model field's value is read.
type FieldKind int

// Field kinds.
const (
	Bool FieldKind = iota
	Int
	Float
	Text     // free text
	Choice   // one of Field.Choices, case-insensitive, stored lower-case
	RepoPath // a path inside the project (relative, clean, no "..")
)

// Field is a manifest field one model accepts.
type Field struct {
	Key     string // dotted path, e.g. "model.frontend", "inference.solver"
	Kind    FieldKind
	Choices []string
	// Min and Max bound Int (inclusive) and Float (Min exclusive) values.
	Min, Max float64
	// Engine names the engine configuration key the field sets,
	// "<command>.<key>" (e.g. "synthesize.steps"): its default is the
	// engine's, read from the engines' schema. Empty for a field the
	// worker itself reads.
	Engine string
	Help   string
}

// Catalog is the set of models a worker runs.
type Catalog []*ModelSpec

// Lookup finds a model by any of its spellings; nil when unknown.
func (c Catalog) Lookup(spelling string) *ModelSpec {
	k := spellingKey(spelling)
	if k == "" {
		return nil
	}
	for _, m := range c {
		if spellingKey(m.Name) == k {
			return m
		}
		for _, a := range m.Aliases {
			if spellingKey(a) == k {
				return m
			}
		}
	}
	return nil
}

// Names lists the canonical names of the models serving jobType (all when
// empty), sorted.
func (c Catalog) Names(jobType string) []string {
	var out []string
	for _, m := range c {
		if jobType == "" || m.JobType == jobType {
			out = append(out, m.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Parse reads a manifest and resolves every job's model against c.
func (c Catalog) Parse(data []byte) (*Manifest, error) { return c.ParseWith(data, limits.Default()) }

// ParseWith reads a manifest within l and resolves every job's model.
func (c Catalog) ParseWith(data []byte, l limits.Limits) (*Manifest, error) {
	m, err := ParseWith(data, l)
	if err != nil {
		return nil, err
	}
	for _, j := range m.Jobs {
		c.Resolve(j)
	}
	return m, nil
}

// Resolve gives j its model: the canonical name, the model's fields read
// from the entry with their defaults, and the model's defaults for common
// knobs the job left out. Every problem found, of any field, joins
// j.Invalid, so a team sees all of them at once.
func (c Catalog) Resolve(j *Job) {
	if j.raw == nil || j.Spec != nil {
		return
	}
	p := &parser{}
	spelling := j.ModelType
	spec := c.Lookup(spelling)
	want := strings.Join(c.Names(j.JobType), " or ")
	if want == "" {
		want = strings.Join(c.Names(""), " or ")
	}
	switch {
	case spelling == "":
		p.fail("model.type", "missing (expected %s)", want)
	case spec == nil:
		p.fail("model.type", "%q is not a model this worker knows (expected %s)", spelling, want)
	case j.JobType != "" && spec.JobType != j.JobType:
		p.fail("model.type", "%s cannot run a %s job (expected %s)", spec.Name, j.JobType, want)
	}
	if spec != nil {
		j.ModelType, j.Spec = spec.Name, spec
		j.Options = map[string]any{}
		for _, f := range spec.Fields {
			j.Options[f.Key] = p.field(j.raw, f)
		}
		if spec.Check != nil {
			for _, err := range spec.Check(j) {
				p.errs = append(p.errs, err)
			}
		}
	}
	j.problems = append(j.problems, p.errs...)
	j.Invalid = j.problemsError()
}

// field reads one model field from the entry (nil when absent: Default).
func (p *parser) field(raw map[string]any, f Field) any {
	m := raw
	if i := strings.LastIndexByte(f.Key, '.'); i >= 0 {
		parts := strings.Split(f.Key[:i], ".")
		for n := range parts {
			m = p.mapping(m, strings.Join(parts[:n+1], "."))
		}
	}
	if m == nil || m[leaf(f.Key)] == nil {
		return nil
	}
	switch f.Kind {
	case Bool:
		return p.bool(m, f.Key)
	case Int:
		return p.int(m, f.Key, int(f.Min), int(f.Max))
	case Float:
		return p.float(m, f.Key, f.Min, f.Max)
	case Choice:
		v := strings.ToLower(strings.TrimSpace(p.str(m, f.Key)))
		for _, c := range f.Choices {
			if v == c {
				return v
			}
		}
		p.fail(f.Key, "%q is not one of %s", v, strings.Join(f.Choices, ", "))
		return nil
	case RepoPath:
		v := p.str(m, f.Key)
		if v == "" {
			return nil
		}
		if err := ValidateRepoPath(v, ""); err != nil {
			p.fail(f.Key, "%v", err)
			return nil
		}
		return v
	}
	return p.str(m, f.Key)
}

// Opt is a model field's value; nil when the job left it out.
func (j *Job) Opt(key string) any { return j.Options[key] }

// Set reports whether the job set a model field.
func (j *Job) Set(key string) bool { return j.Options[key] != nil }

// OptBoolPtr is a Bool field's value, nil when left out.
func (j *Job) OptBoolPtr(key string) *bool {
	if b, ok := j.Options[key].(bool); ok {
		return &b
	}
	return nil
}

// OptIntPtr is an Int field's value, nil when left out.
func (j *Job) OptIntPtr(key string) *int {
	if n, ok := j.Options[key].(int); ok {
		return &n
	}
	return nil
}

// OptFloatPtr is a Float field's value, nil when left out.
func (j *Job) OptFloatPtr(key string) *float64 {
	if j.Options[key] == nil {
		return nil
	}
	f := j.OptFloat(key)
	return &f
}

// OptBool is a Bool field's value.
func (j *Job) OptBool(key string) bool { b, _ := j.Options[key].(bool); return b }

// OptInt is an Int field's value.
func (j *Job) OptInt(key string) int { n, _ := j.Options[key].(int); return n }

// OptFloat is a Float field's value.
func (j *Job) OptFloat(key string) float64 {
	switch v := j.Options[key].(type) {
	case float64:
		return v
	case int:
		return float64(v)
	}
	return 0
}

// OptString is a Text, Choice or RepoPath field's value.
func (j *Job) OptString(key string) string { s, _ := j.Options[key].(string); return s }

// spellingKey folds case and drops separators: "Stable-TTS" = "stabletts".
func spellingKey(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == ' ' || r == '.' {
			return -1
		}
		return r
	}, strings.ToLower(strings.TrimSpace(s)))
}

// FieldHelp formats a field for help texts: "model.frontend (auto|ipa|…,
// default auto): what it does"; def is the default to show (nil: none).
func (f Field) FieldHelp(def any) string {
	var b strings.Builder
	b.WriteString(f.Key)
	var attrs []string
	if len(f.Choices) > 0 {
		attrs = append(attrs, strings.Join(f.Choices, "|"))
	}
	if def != nil && def != "" {
		attrs = append(attrs, fmt.Sprintf("default %v", def))
	}
	if len(attrs) > 0 {
		b.WriteString(" (" + strings.Join(attrs, ", ") + ")")
	}
	if f.Help != "" {
		b.WriteString(": " + f.Help)
	}
	return b.String()
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
