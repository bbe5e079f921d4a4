package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"gpu-worker/handlers"
)

// modelsCmd prints what each model accepts in a manifest, from the same
// descriptions validation reads.
func modelsCmd(_ context.Context, _ []string, stdout, _ io.Writer) error {
	for _, m := range handlers.Models() {
		s := m.Spec
		fmt.Fprintf(stdout, "%s (job_type: %s; engine %s)\n  %s\n", s.Name, s.JobType, s.Engine, s.Summary)
		if len(s.Aliases) > 0 {
			fmt.Fprintf(stdout, "  also spelled: %s\n", strings.Join(s.Aliases, ", "))
		}
		fmt.Fprintf(stdout, "  weights licence: %s\n", s.Licence)
		if len(s.Fields) > 0 {
			fmt.Fprintln(stdout, "  manifest fields:")
			for _, f := range s.Fields {
				fmt.Fprintf(stdout, "    %s\n", f.FieldHelp())
			}
		}
		for _, st := range m.Settings {
			fmt.Fprintf(stdout, "  operator setting --%s (%s): %s\n", st.Flag, st.Env, st.Help)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}
