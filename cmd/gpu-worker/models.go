package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"gpu-worker/contract"
	"gpu-worker/handlers"
)

// modelsCmd prints what each model accepts in a manifest, from the same
// descriptions validation reads, with the engines' defaults; --markdown
// prints the training knobs' defaults as the README's table.
func modelsCmd(_ context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) == 1 && args[0] == "--markdown" {
		fmt.Fprint(stdout, knobTable())
		return nil
	}
	for _, m := range handlers.Models() {
		s := m.Spec
		fmt.Fprintf(stdout, "%s (job_type: %s; engine %s)\n  %s\n", s.Name, s.JobType, s.Engine, s.Summary)
		if len(s.Aliases) > 0 {
			fmt.Fprintf(stdout, "  also spelled: %s\n", strings.Join(s.Aliases, ", "))
		}
		fmt.Fprintf(stdout, "  weights licence: %s\n", s.Licence)
		if len(s.Fields) > 0 {
			fmt.Fprintln(stdout, "  manifest fields (defaults are the engine's):")
			for _, f := range s.Fields {
				var def any
				if d := m.FieldDefault(f); d != "" {
					def = d
				}
				fmt.Fprintf(stdout, "    %s\n", f.FieldHelp(def))
			}
		}
		fmt.Fprintln(stdout, "  training knobs (manifest key: the engine's default):")
		for _, k := range m.Knobs() {
			d := contract.Engines().Describe(s.Engine, "train", k.Engine)
			if k.Engine != k.Manifest {
				d += " (engine key " + k.Engine + ")"
			}
			fmt.Fprintf(stdout, "    %s: %s\n", k.Manifest, d)
		}
		for _, st := range m.Settings {
			fmt.Fprintf(stdout, "  operator setting --%s (%s): %s\n", st.Flag, st.Env, st.Help)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

// knobTable is the training knobs' defaults of every model, a Markdown
// table read from the engines' schema.
func knobTable() string {
	var b strings.Builder
	models := handlers.Models()
	b.WriteString("| knob |")
	for _, m := range models {
		b.WriteString(" " + m.Spec.Name + " |")
	}
	b.WriteString("\n| --- |" + strings.Repeat(" --- |", len(models)) + "\n")
	for i, k := range models[0].Knobs() {
		b.WriteString("| `" + k.Manifest + "` |")
		for _, m := range models {
			kk := m.Knobs()[i]
			d := contract.Engines().Describe(m.Spec.Engine, "train", kk.Engine)
			if strings.HasPrefix(d, "set by the engine") {
				d = "from the effective batch"
			}
			b.WriteString(" " + d + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}
