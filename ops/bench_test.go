package ops

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkSubmitLargeManifest appends to a manifest of 500 jobs: the cost
// of reading, editing and rewriting a big project's manifest by node.
func BenchmarkSubmitLargeManifest(b *testing.B) {
	var m strings.Builder
	m.WriteString("version: 1\njobs:\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&m, "  - job_id: \"j%d\" # job %d\n    job_type: asr\n    mode: training\n    model:\n      type: W2V2BERT\n    epochs: 10\n", i, i)
	}
	t := &testing.T{}
	p, _ := localProject(t, m.String())
	job := JobNode(asrJob())
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Submit(ctx, p, nil, job, now); err != nil {
			b.Fatal(err)
		}
	}
}
