package handlers

import (
	"strings"

	"gpu-worker/contract"
	"gpu-worker/manifest"
)

// conditions pick the engines' presets that apply to a job (its size, and
// extra ones such as the base's architecture), to read its defaults from
// the engines' schema.
func conditions(j *manifest.Job, extra ...string) []string {
	var c []string
	if j.ModelSize != "" {
		c = append(c, "size="+j.ModelSize)
	}
	return append(c, extra...)
}

// Knob is a common training knob: its manifest key and the engine key it
// sets.
type Knob struct{ Manifest, Engine string }

// Knobs are the common training knobs of the model's train command.
func (m *Model) Knobs() []Knob {
	save := "save_every_steps"
	if m.Spec.Engine == "stabletts" {
		save = "save_every_epochs"
	}
	return []Knob{{"epochs", "epochs"}, {"batch_size", "batch_size"},
		{"gradient_accumulation_steps", "gradient_accumulation_steps"}, {"learning_rate", "learning_rate"},
		{"warmup_steps", "warmup_steps"}, {"val_split", "val_split"}, {"save_interval", save}}
}

// FieldDefault is what the engine gives a manifest field the job leaves
// out ("" when the worker itself reads the field).
func (m *Model) FieldDefault(f manifest.Field) string {
	command, key, ok := strings.Cut(f.Engine, ".")
	if !ok {
		return ""
	}
	return contract.Engines().Describe(m.Spec.Engine, command, key)
}

// engineDefaultString is an engine command's default for a text field
// ("" when it has none, or null).
func engineDefaultString(engine, command, key string) string {
	def, _ := contract.Engines().Default(engine, command, key)
	s, _ := def.(string)
	return s
}

// batchSize is the batch a training job starts with: the one it set, else
// the engine's default where conditions hold. The memory estimates and the
// training run read it alike.
func batchSize(s *contract.Schema, engine string, set *int, conditions []string) int {
	return derefOr(set, s.Int(engine, "train", "batch_size", conditions...))
}
