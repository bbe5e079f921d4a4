package limits

import "testing"

// Each bound left zero takes its default; the bounds that were set stay.
func TestOrDefaultFillsEachZeroBound(t *testing.T) {
	if got := (Limits{}).OrDefault(); got != Default() {
		t.Errorf("empty: %+v, want the defaults %+v", got, Default())
	}
	want := Default()
	want.ManifestBytes = 10
	if got := (Limits{ManifestBytes: 10}).OrDefault(); got != want {
		t.Errorf("only ManifestBytes set: %+v, want %+v", got, want)
	}
	set := Limits{RecordingSeconds: 1, LFSObjectBytes: 2, NotebookBytes: 3, ManifestBytes: 4, ManifestJobs: 5, YAMLAliases: 6, JSONDepth: 7}
	if got := set.OrDefault(); got != set {
		t.Errorf("all set: %+v, want them kept", got)
	}
}
