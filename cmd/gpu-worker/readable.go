package main

import (
	"fmt"
	"os"
	"syscall"

	"gpu-worker/engine"
)

// readableBy reports whether acct could read path by its permission bits
// (owner, primary group, others).
func readableBy(path string, acct *engine.Account) (bool, error) {
	st, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", path, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return st.Mode().Perm()&0o004 != 0, nil
	}
	mode := st.Mode().Perm()
	switch {
	case sys.Uid == acct.UID:
		return mode&0o400 != 0, nil
	case sys.Gid == acct.GID:
		return mode&0o040 != 0, nil
	}
	return mode&0o004 != 0, nil
}
