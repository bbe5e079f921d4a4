// Package contract is the typed seam between jobs and engines: one Go
// struct per engine command, and the engines' own schema of every key
// (type, unit, default, presets), printed by `python -m gpuworker_engines
// schema` and embedded here. The engines' dataclasses are the one home of
// every default: the worker sends only what a job or the operator set, and
// reads a default (for a memory estimate, for `gpu-worker models`) from
// the schema.
package contract

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// SchemaFormat is the schema version this worker reads.
const SchemaFormat = "gpuworker-engines-schema/1"

//go:embed schema.json
var schemaJSON []byte

// Schema is the engines' description of every command's configuration.
type Schema struct {
	Format  string                        `json:"format"`
	Engines map[string]map[string]Command `json:"engines"`
}

// Command is one engine command's configuration.
type Command struct {
	Summary string           `json:"summary"`
	Fields  map[string]Field `json:"fields"`
	// Presets are defaults that depend on something else, keyed
	// "<key>=<value>" (size=tiny, architecture=wav2vec2).
	Presets map[string]map[string]any `json:"presets"`
}

// Field is one configuration key.
type Field struct {
	Type     string           `json:"type"` // int float bool str path list[str] object any
	Default  any              `json:"default"`
	Unit     string           `json:"unit"`
	Help     string           `json:"help"`
	Required bool             `json:"required"`
	Nullable bool             `json:"nullable"`
	Choices  []any            `json:"choices"`
	Min      *float64         `json:"min"`
	Max      *float64         `json:"max"`
	Fields   map[string]Field `json:"fields"` // of an object
}

// Parse reads a schema.
func Parse(b []byte) (*Schema, error) {
	var s Schema
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parse engine schema: %w", err)
	}
	if s.Format != SchemaFormat {
		return nil, fmt.Errorf("engine schema format %q, want %q", s.Format, SchemaFormat)
	}
	return &s, nil
}

// Engines is the schema the worker was built with. It is immutable: the
// engines' code travels with the binary, and a test keeps the two equal.
var Engines = sync.OnceValue(func() *Schema {
	s, err := Parse(schemaJSON)
	if err != nil {
		panic(err) // the embedded file is checked by the tests
	}
	return s
})

// Command returns one engine command's description.
func (s *Schema) Command(engine, command string) (Command, bool) {
	c, ok := s.Engines[engine][command]
	return c, ok
}

// Default is key's default for an engine command, under the given
// conditions ("size=tiny", "architecture=wav2vec2"): the first preset that
// sets it wins, else the plain default. ok is false for an unknown key or
// a default of null.
func (s *Schema) Default(engine, command, key string, conditions ...string) (any, bool) {
	c, found := s.Command(engine, command)
	if !found {
		return nil, false
	}
	// The first preset that names the key decides, null included (a tiny
	// model has no effective batch whatever its architecture's recipe).
	for _, cond := range conditions {
		if v, ok := c.Presets[cond][key]; ok {
			return v, v != nil
		}
	}
	f, ok := c.Fields[key]
	if !ok || f.Default == nil {
		return nil, false
	}
	return f.Default, true
}

// Int is a numeric default as an int (0 when there is none).
func (s *Schema) Int(engine, command, key string, conditions ...string) int {
	v, _ := s.Default(engine, command, key, conditions...)
	f, _ := v.(float64)
	return int(f)
}

// Check refuses a configuration whose keys the engine does not declare,
// naming every one: a misspelt or renamed key fails before the engine
// starts, not silently in it.
func (s *Schema) Check(engine, command string, config any) error {
	c, ok := s.Command(engine, command)
	if !ok {
		return fmt.Errorf("engine %s has no command %q in its schema", engine, command)
	}
	b, err := json.Marshal(config)
	if err != nil {
		return fmt.Errorf("engine config: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("engine config: not an object: %w", err)
	}
	var unknown []string
	unknownKeys("", m, c.Fields, &unknown)
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config for %s %s: unknown key(s) %s", engine, command, strings.Join(unknown, ", "))
	}
	return nil
}

func unknownKeys(prefix string, m map[string]any, fields map[string]Field, out *[]string) {
	for k, v := range m {
		f, ok := fields[k]
		if !ok {
			*out = append(*out, prefix+k)
			continue
		}
		if sub, isMap := v.(map[string]any); isMap && f.Type == "object" {
			unknownKeys(prefix+k+".", sub, f.Fields, out)
		}
	}
}

// Field returns the description of a key of an engine command; a dotted
// path reaches into an object ("lm.order").
func (s *Schema) Field(engine, command, path string) (Field, bool) {
	c, ok := s.Command(engine, command)
	if !ok {
		return Field{}, false
	}
	fields := c.Fields
	var f Field
	for _, part := range strings.Split(path, ".") {
		if f, ok = fields[part]; !ok {
			return Field{}, false
		}
		fields = f.Fields
	}
	return f, true
}

// Describe says what a key defaults to, presets included, for help texts:
// "1000 epochs", "null (size=tiny: 0.002; architecture=wav2vec2: 0.0003)".
func (s *Schema) Describe(engine, command, path string) string {
	f, ok := s.Field(engine, command, path)
	if !ok {
		return ""
	}
	var b strings.Builder
	if f.Default != nil {
		fmt.Fprintf(&b, "%v", f.Default)
		if f.Unit != "" && f.Unit != "ratio" {
			b.WriteString(" " + f.Unit)
		}
	}
	c, _ := s.Command(engine, command)
	var presets []string
	for cond, values := range c.Presets {
		if v, ok := lookup(values, path); ok {
			presets = append(presets, fmt.Sprintf("%s: %v", cond, v))
		}
	}
	// The size decides before the architecture, as in the engines.
	sort.Slice(presets, func(i, j int) bool {
		si, sj := strings.HasPrefix(presets[i], "size="), strings.HasPrefix(presets[j], "size=")
		if si != sj {
			return si
		}
		return presets[i] < presets[j]
	})
	if len(presets) > 0 {
		if b.Len() == 0 {
			b.WriteString("by recipe")
		}
		b.WriteString(" (" + strings.Join(presets, "; ") + ")")
	}
	if b.Len() == 0 {
		return "set by the engine: " + f.Help
	}
	return b.String()
}

// lookup finds a dotted path in nested preset values.
func lookup(values map[string]any, path string) (any, bool) {
	var cur any = values
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}
