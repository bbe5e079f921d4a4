package manifest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"gpu-worker/limits"
)

// billionLaughs is a few hundred bytes whose aliases expand to 10^9 values.
func billionLaughs() string {
	var b strings.Builder
	b.WriteString("version: 1\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		refs := strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10)
		fmt.Fprintf(&b, "lol%d: &l%d [%s]\n", i, i, strings.TrimSuffix(refs, ", "))
	}
	b.WriteString("jobs:\n  - job_id: a\n    job_type: tts\n    mode: training\n    model: {type: StableTTS}\n    name: *l9\n")
	return b.String()
}

func TestManifestLimits(t *testing.T) {
	l := limits.Default()
	l.ManifestJobs = 3
	l.ManifestBytes = 4096
	l.YAMLAliases = 5
	jobs := func(n int) string {
		var b strings.Builder
		b.WriteString("version: 1\njobs:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "  - {job_id: j%d, job_type: asr, mode: training, model: {type: W2V2BERT}}\n", i)
		}
		return b.String()
	}
	shared := "version: 1\nf: &f [\"MAT 1:1\"]\njobs:\n" +
		"  - {job_id: a, job_type: asr, mode: inference, model: {type: W2V2BERT}, inference: {include_verses: *f}}\n" +
		"  - {job_id: b, job_type: asr, mode: inference, model: {type: W2V2BERT}, inference: {include_verses: *f}}\n"
	for _, c := range []struct {
		name, doc, want string
	}{
		{"too many jobs", jobs(4), "lists 4 jobs; this worker reads at most 3 jobs (setting max-manifest-jobs)"},
		{"too many bytes", jobs(3) + "# " + strings.Repeat("x", 4096) + "\n", "this worker reads at most 4.0 KiB (setting max-manifest-bytes)"},
		{"billion laughs", billionLaughs(), "setting max-yaml-aliases"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "billion laughs" {
				l.ManifestBytes = 1 << 20
				l.YAMLAliases = 1000
			}
			_, err := ParseWith([]byte(c.doc), l)
			var ex *limits.Exceeded
			if !errors.As(err, &ex) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want an *Exceeded saying %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), Path) {
				t.Errorf("message does not name %s: %v", Path, err)
			}
		})
	}
	// What js-yaml writes for one array used twice stays readable.
	m, err := ParseWith([]byte(shared), limits.Default())
	if err != nil || len(m.Jobs) != 2 || m.Jobs[1].Inference.Include[0] != "MAT 1:1" {
		t.Fatalf("shared filter: %v %+v", err, m)
	}
	if _, err := ParseWith([]byte(jobs(3)), l); err != nil {
		t.Fatalf("3 jobs within the limit: %v", err)
	}
}

func TestResponseWithAliasBombIsRefused(t *testing.T) {
	doc := strings.Replace(billionLaughs(), "version: 1\n", "state: running\nworker_id: x\n", 1)
	doc = strings.Replace(doc, "jobs:", "result:\n  bomb: *l9\nignored:", 1)
	if _, err := ParseResponse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "max-yaml-aliases") {
		t.Fatalf("err = %v", err)
	}
}

// A response.yaml is read within the operator's bounds, not the defaults.
func TestResponseWithinGivenLimits(t *testing.T) {
	doc := "state: running\nworker_id: x\n# " + strings.Repeat("x", 2048) + "\n"
	if _, err := ParseResponse([]byte(doc)); err != nil {
		t.Fatalf("within the default bounds: %v", err)
	}
	l := limits.Default()
	l.ManifestBytes = 1024
	_, err := ParseResponseWith([]byte(doc), l)
	var ex *limits.Exceeded
	if !errors.As(err, &ex) || !strings.Contains(err.Error(), "at most 1.0 KiB (setting max-manifest-bytes)") {
		t.Fatalf("err = %v, want an *Exceeded naming max-manifest-bytes", err)
	}
	l = limits.Default()
	l.YAMLAliases = 1
	if _, err := ParseResponseWith([]byte("state: running\na: &a 1\nb: *a\nc: *a\n"), l); err == nil || !strings.Contains(err.Error(), "max-yaml-aliases") {
		t.Fatalf("two aliases, one allowed: err = %v", err)
	}
}

// The tree the guard checked is the one decoded: an empty document still
// reads as a manifest without a version, a response as the zero response.
func TestGuardedTreeDecoded(t *testing.T) {
	if _, err := ParseWith(nil, limits.Default()); !errors.Is(err, ErrVersion) {
		t.Errorf("empty manifest: %v", err)
	}
	if r, err := ParseResponse(nil); err != nil || r.State != "" {
		t.Errorf("empty response: %+v, %v", r, err)
	}
	r, err := ParseResponse([]byte("state: running\nworker_id: &w gpu-7\nresult: {by: *w}\n"))
	if err != nil || r.WorkerID != "gpu-7" || r.Result["by"] != "gpu-7" {
		t.Errorf("aliased response: %+v, %v", r, err)
	}
}
