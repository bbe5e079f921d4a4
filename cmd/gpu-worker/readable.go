package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"gpu-worker/engine"
)

// readableBy reports whether acct could read path: as its owner, through
// its primary or any supplementary group, as anyone, or through an access
// ACL. It errs on the side of "readable": a secret it passes must be one
// the account cannot read.
func readableBy(path string, acct *engine.Account) (bool, error) {
	st, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", path, err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return st.Mode().Perm()&0o004 != 0, nil
	}
	groups, err := accountGroups(acct)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", path, err)
	}
	acl, err := hasAccessACL(path)
	if err != nil {
		return false, fmt.Errorf("check %s: %w", path, err)
	}
	return permits(st.Mode().Perm(), sys.Uid, sys.Gid, acct.UID, groups, acl), nil
}

// permits applies the kernel's order of checks to a file of owner:group
// for a user uid in groups. With an access ACL the group bits are its
// mask, the most any named user or group entry grants: acct may be named.
func permits(mode os.FileMode, owner, group, uid uint32, groups []uint32, acl bool) bool {
	switch {
	case owner == uid:
		return mode&0o400 != 0
	case acl && mode&0o040 != 0:
		return true
	case slices.Contains(groups, group):
		return mode&0o040 != 0
	}
	return mode&0o004 != 0
}

// accountGroups are acct's primary and supplementary groups.
func accountGroups(acct *engine.Account) ([]uint32, error) {
	groups := []uint32{acct.GID}
	u, err := user.LookupId(strconv.FormatUint(uint64(acct.UID), 10))
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", acct.Name, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of %s: %w", acct.Name, err)
	}
	for _, id := range ids {
		gid, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("groups of %s: gid %q: %w", acct.Name, id, err)
		}
		groups = append(groups, uint32(gid))
	}
	return groups, nil
}

// hasAccessACL reports whether path carries a POSIX access ACL.
func hasAccessACL(path string) (bool, error) {
	_, err := unix.Getxattr(path, "system.posix_acl_access", nil)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return false, nil
	}
	return false, fmt.Errorf("read ACL: %w", err)
}
