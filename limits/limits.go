// Package limits bounds what a project can make a worker read. Every file
// in a project may come from any translator with push rights, and one
// worker serves many teams: a file over a bound fails its own job with a
// message naming the file and the setting, and disturbs nothing else.
package limits

import (
	"fmt"
	"strconv"
)

// Limits are the bounds; each is an operator setting (see Settings).
type Limits struct {
	RecordingSeconds float64 // longest recording decoded
	LFSObjectBytes   int64   // largest LFS object downloaded
	NotebookBytes    int64   // largest .codex notebook read
	ManifestBytes    int64   // largest manifest.yaml or response.yaml read
	ManifestJobs     int     // most jobs one manifest may hold
	YAMLAliases      int     // most aliases in one manifest or response.yaml
	JSONDepth        int     // deepest nesting of a notebook's JSON
}

// Default are the bounds a worker starts with.
func Default() Limits {
	return Limits{
		RecordingSeconds: 600,
		LFSObjectBytes:   16 << 30,
		NotebookBytes:    64 << 20,
		ManifestBytes:    4 << 20,
		ManifestJobs:     2000,
		YAMLAliases:      100,
		JSONDepth:        64,
	}
}

// OrDefault fills each bound left zero with its default: a zero bound
// would refuse everything (JSONDepth, YAMLAliases) or nothing at all.
func (l Limits) OrDefault() Limits {
	d := Default()
	if l.RecordingSeconds <= 0 {
		l.RecordingSeconds = d.RecordingSeconds
	}
	if l.LFSObjectBytes <= 0 {
		l.LFSObjectBytes = d.LFSObjectBytes
	}
	if l.NotebookBytes <= 0 {
		l.NotebookBytes = d.NotebookBytes
	}
	if l.ManifestBytes <= 0 {
		l.ManifestBytes = d.ManifestBytes
	}
	if l.ManifestJobs <= 0 {
		l.ManifestJobs = d.ManifestJobs
	}
	if l.YAMLAliases <= 0 {
		l.YAMLAliases = d.YAMLAliases
	}
	if l.JSONDepth <= 0 {
		l.JSONDepth = d.JSONDepth
	}
	return l
}

// Setting is one bound as a flag, an environment variable and a config key.
type Setting struct {
	Flag, Env, Help string
	// Get and Set read and write the bound in a Limits as text.
	Get func(*Limits) string
	Set func(*Limits, string) error
}

// Settings lists every bound, for the command line and the docs.
func Settings() []Setting {
	return []Setting{
		floatSetting("max-recording-seconds", "GPU_WORKER_MAX_RECORDING_SECONDS",
			"longest recording decoded; a longer one is left out of its job as \"too long\"",
			func(l *Limits) *float64 { return &l.RecordingSeconds }),
		intSetting("max-lfs-object-bytes", "GPU_WORKER_MAX_LFS_OBJECT_BYTES",
			"largest LFS object (recording, checkpoint, model) a job downloads",
			func(l *Limits) *int64 { return &l.LFSObjectBytes }),
		intSetting("max-notebook-bytes", "GPU_WORKER_MAX_NOTEBOOK_BYTES",
			"largest .codex notebook a job reads",
			func(l *Limits) *int64 { return &l.NotebookBytes }),
		intSetting("max-manifest-bytes", "GPU_WORKER_MAX_MANIFEST_BYTES",
			"largest gpu_jobs/manifest.yaml (or response.yaml) read",
			func(l *Limits) *int64 { return &l.ManifestBytes }),
		intSetting("max-manifest-jobs", "GPU_WORKER_MAX_MANIFEST_JOBS",
			"most jobs one manifest may list",
			func(l *Limits) *int { return &l.ManifestJobs }),
		intSetting("max-yaml-aliases", "GPU_WORKER_MAX_YAML_ALIASES",
			"most YAML aliases (*ref) in a manifest or response.yaml; expanding them is bounded too",
			func(l *Limits) *int { return &l.YAMLAliases }),
		intSetting("max-json-depth", "GPU_WORKER_MAX_JSON_DEPTH",
			"deepest nesting of objects and arrays in a .codex notebook",
			func(l *Limits) *int { return &l.JSONDepth }),
	}
}

func floatSetting(flag, env, help string, field func(*Limits) *float64) Setting {
	return Setting{Flag: flag, Env: env, Help: help,
		Get: func(l *Limits) string { return strconv.FormatFloat(*field(l), 'f', -1, 64) },
		Set: func(l *Limits, s string) error {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || v <= 0 {
				return fmt.Errorf("%s: want a positive number, got %q", flag, s)
			}
			*field(l) = v
			return nil
		}}
}

func intSetting[T int | int64](flag, env, help string, field func(*Limits) *T) Setting {
	return Setting{Flag: flag, Env: env, Help: help,
		Get: func(l *Limits) string { return strconv.FormatInt(int64(*field(l)), 10) },
		Set: func(l *Limits, s string) error {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v <= 0 {
				return fmt.Errorf("%s: want a positive whole number, got %q", flag, s)
			}
			*field(l) = T(v)
			return nil
		}}
}

// Exceeded is an input over a bound.
type Exceeded struct {
	Path    string // the project path of the file
	What    string // e.g. "is 70.2 MB", "nests 300 levels deep"
	Limit   string // e.g. "64 MiB"
	Setting string // the flag that raises it
}

func (e *Exceeded) Error() string {
	return fmt.Sprintf("%s %s; this worker reads at most %s (setting %s)", e.Path, e.What, e.Limit, e.Setting)
}

// Bytes formats a size for a message.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	v, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v, suffix = v/unit, s
		if v < unit {
			break
		}
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + suffix
}

// CheckBytes returns an *Exceeded when a file of size bytes is over max.
func CheckBytes(path string, size, max int64, setting string) error {
	if max > 0 && size > max {
		return &Exceeded{Path: path, What: "is " + Bytes(size), Limit: Bytes(max), Setting: setting}
	}
	return nil
}
