package manifest

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"gpu-worker/limits"
)

// Job states as response.yaml carries them: the only ones the Codex job
// panel knows.
const (
	StateRunning   = "running"
	StateCompleted = "completed"
	StateFailed    = "failed"
	StateCanceled  = "canceled"
)

// legacyInterrupted is what older workers wrote when they shut down mid-job;
// such a claim is still free to take over at once.
const legacyInterrupted = "interrupted"

// Termination reasons the Codex extension shows.
const (
	ReasonCanceled = "Job canceled by user"
	ReasonRemoved  = "Job removed from manifest"
	ReasonReclaim  = "Job claimed by another worker"
	// ReasonHandedBack marks a running job whose worker shut down after
	// saving what it could: any worker may take it over at once.
	ReasonHandedBack = "Worker shut down; job handed back"
)

// Response is gpu_jobs/job_<id>/response.yaml, fields in the documented order.
type Response struct {
	WorkerID           string         `yaml:"worker_id"`
	State              string         `yaml:"state"`
	Timestamp          time.Time      `yaml:"timestamp"`
	RetryCount         int            `yaml:"retry_count"`
	EpochsCompleted    *int           `yaml:"epochs_completed"`
	ExpectedCompletion *time.Time     `yaml:"expected_completion"`
	ErrorMessage       *string        `yaml:"error_message"`
	TerminationReason  *string        `yaml:"termination_reason"`
	StatusMessage      string         `yaml:"status_message,omitempty"`
	Result             map[string]any `yaml:"result,omitempty"`
	// OwnerToken names the worker process that holds the claim (worker_id
	// alone cannot tell a restarted worker from the one before it).
	OwnerToken string `yaml:"owner_token,omitempty"`
}

// Terminal reports whether the job is over for good.
func (r *Response) Terminal() bool {
	switch r.State {
	case StateCompleted, StateFailed, StateCanceled:
		return true
	}
	return false
}

// Stale reports whether another worker may take the job over: handed back
// by a worker that shut down, or running without a heartbeat for longer
// than claimTimeout.
func (r *Response) Stale(now time.Time, claimTimeout time.Duration) bool {
	switch r.State {
	case legacyInterrupted:
		return true
	case StateRunning:
		return r.HandedBack() || now.Sub(r.Timestamp) > claimTimeout
	}
	return false
}

// HandedBack reports a running job whose worker gave it up on shutting down.
func (r *Response) HandedBack() bool {
	return r.State == StateRunning && r.TerminationReason != nil && *r.TerminationReason == ReasonHandedBack
}

// ParseResponse reads response.yaml within the default limits. Anyone with
// push rights can write one, so it gets the manifest's bounds.
func ParseResponse(data []byte) (*Response, error) { return ParseResponseWith(data, limits.Default()) }

// ParseResponseWith reads response.yaml within l: its size
// (max-manifest-bytes) and its YAML aliases.
func ParseResponseWith(data []byte, l limits.Limits) (*Response, error) {
	if err := limits.CheckBytes("response.yaml", int64(len(data)), l.ManifestBytes, "max-manifest-bytes"); err != nil {
		return nil, err
	}
	root, err := checkYAML(data, "response", "response.yaml", l.YAMLAliases)
	if err != nil {
		return nil, err
	}
	var r Response
	if err := decodeNode(root, &r); err != nil {
		return nil, fmt.Errorf("parse response: %w", err)
	}
	return &r, nil
}

// Marshal writes response.yaml with UTC timestamps.
func (r *Response) Marshal() []byte {
	c := *r
	c.Timestamp = c.Timestamp.UTC().Truncate(time.Second)
	if c.ExpectedCompletion != nil {
		t := c.ExpectedCompletion.UTC().Truncate(time.Second)
		c.ExpectedCompletion = &t
	}
	b, err := yaml.Marshal(&c)
	if err != nil {
		// Only unmarshalable Result values can fail; drop them rather than lose the state.
		c.Result = map[string]any{"error": fmt.Sprintf("result not serializable: %v", err)}
		b, _ = yaml.Marshal(&c)
	}
	return b
}

// Ptr returns a pointer to v, for the optional fields.
func Ptr[T any](v T) *T { return &v }
