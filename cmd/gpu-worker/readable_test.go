package main

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"gpu-worker/engine"
)

// The checks run in the kernel's order: the owner's bits for the owner,
// else the group's for a member of the file's group (primary or
// supplementary), else the others'; an access ACL may name the account,
// so its mask alone decides.
func TestPermitsFollowsOwnerGroupsOthersAndACLs(t *testing.T) {
	const me, mine, theirs, staff = 1000, 1000, 0, 50
	for _, c := range []struct {
		name         string
		mode         os.FileMode
		owner, group uint32
		groups       []uint32
		acl          bool
		want         bool
	}{
		{"root's 600", 0o600, theirs, theirs, []uint32{mine}, false, false},
		{"root's 644", 0o644, theirs, theirs, []uint32{mine}, false, true},
		{"own 600", 0o600, me, theirs, []uint32{mine}, false, true},
		{"own 044", 0o044, me, mine, []uint32{mine}, false, false},
		{"primary group 640", 0o640, theirs, mine, []uint32{mine}, false, true},
		{"supplementary group 640", 0o640, theirs, staff, []uint32{mine, staff}, false, true},
		{"other group 640", 0o640, theirs, staff, []uint32{mine}, false, false},
		{"member denied 604", 0o604, theirs, staff, []uint32{mine, staff}, false, false},
		{"ACL mask r", 0o640, theirs, theirs, []uint32{mine}, true, true},
		{"ACL masked out", 0o600, theirs, theirs, []uint32{mine}, true, false},
	} {
		if got := permits(c.mode, c.owner, c.group, me, c.groups, c.acl); got != c.want {
			t.Errorf("%s: readable %v, want %v", c.name, got, c.want)
		}
	}
}

// On a real file: a secret root keeps to itself passes; one a group of the
// account or an ACL entry naming it opens does not.
func TestReadableByChecksTheRealFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving files to other owners needs root")
	}
	nobody, err := engine.LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secret, []byte("glpat-x"), 0o600)
	check := func(want bool, what string) {
		t.Helper()
		got, err := readableBy(secret, nobody)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: readable by nobody %v, want %v", what, got, want)
		}
	}
	check(false, "root's, 600")
	os.Chmod(secret, 0o640)
	check(false, "root's group, 640")
	os.Chown(secret, 0, int(nobody.GID))
	check(true, "nobody's group, 640")
	os.Chown(secret, 0, 0)

	// user::rw- user:nobody:r-- group::--- mask::r-- other::---
	acl := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 6, ^uint32(0)}, {0x02, 4, nobody.UID}, {0x04, 0, ^uint32(0)}, {0x10, 4, ^uint32(0)}, {0x20, 0, ^uint32(0)}} {
		acl = binary.LittleEndian.AppendUint16(acl, e.tag)
		acl = binary.LittleEndian.AppendUint16(acl, e.perm)
		acl = binary.LittleEndian.AppendUint32(acl, e.id)
	}
	if err := unix.Setxattr(secret, "system.posix_acl_access", acl, 0); errors.Is(err, unix.ENOTSUP) {
		t.Log("this file system has no ACLs")
		return
	} else if err != nil {
		t.Fatal(err)
	}
	check(true, "an ACL naming nobody")
}
