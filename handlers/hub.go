package handlers

import (
	"context"
	"os"
	"regexp"
	"strings"
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
func (r *run) fetchHub(ctx context.Context, refs ...string) {
	var want []string
	for _, ref := range refs {
		if ref != "" && isHubRef(ref) {
			want = append(want, ref)
		}
	}
	if len(want) == 0 || r.cfg.Engine == nil {
		return
	}
	r.Log.Info("fetching from the Hugging Face hub", "refs", want)
	if _, err := r.cfg.Engine.Online().Run(ctx, "hub", "fetch", map[string]any{"refs": want}, r.WorkDir, r.LogWriter, nil); err != nil {
		r.Log.Warn("could not fetch from the hub; the engine looks in its local cache", "refs", want, "err", err)
	}
}
