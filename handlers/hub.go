package handlers

import (
	"context"
	"os"
	"regexp"
	"strings"

	"gpu-worker/contract"
)

// hubRepoID is how the hub names a repository: owner/name.
var hubRepoID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)

// isHubRef tells a hub reference (hf://owner/repo/file, or a repository id
// that is not a local folder) from a local path.
func isHubRef(ref string) bool {
	if strings.HasPrefix(ref, "hf://") {
		return true
	}
	if _, err := os.Stat(ref); err == nil {
		return false
	}
	return hubRepoID.MatchString(ref)
}

// fetchHub brings the hub references among refs into the engines' cache
// before an engine starts: engines run without network. A reference that
// cannot be fetched is left to the engine, which finds it in the cache or
// fails naming it.
func (r *run) fetchHub(ctx context.Context, refs ...string) { r.fetchHubOptional(ctx, refs, nil) }

// fetchHubOptional also fetches optional references: files a repository
// may lack (the published MMS adapter of a language that has none).
func (r *run) fetchHubOptional(ctx context.Context, refs, optional []string) {
	hub := func(rs []string) []string {
		var out []string
		for _, ref := range rs {
			if ref != "" && isHubRef(ref) {
				out = append(out, ref)
			}
		}
		return out
	}
	want, maybe := hub(refs), hub(optional)
	if len(want)+len(maybe) == 0 || r.cfg.Engine == nil {
		return
	}
	r.Log.Info("fetching from the Hugging Face hub", "refs", append(want, maybe...))
	cfg := &contract.HubFetch{Refs: want, OptionalRefs: maybe}
	if _, err := r.cfg.runChecked(ctx, r.cfg.Engine.Online(), cfg, r.WorkDir, r.LogWriter, nil); err != nil {
		r.Log.Warn("could not fetch from the hub; the engine looks in its local cache", "refs", want, "err", err)
	}
}
