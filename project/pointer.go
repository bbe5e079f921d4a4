package project

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const pointerVersion = "version https://git-lfs.github.com/spec/v1"

// Pointer identifies an LFS object: the sha256 of its bytes and their count.
type Pointer struct {
	OID  string
	Size int64
}

// String is the exact pointer file text Git LFS writes.
func (p Pointer) String() string {
	return fmt.Sprintf("%s\noid sha256:%s\nsize %d\n", pointerVersion, p.OID, p.Size)
}

// ErrNotPointer reports content that is not an LFS pointer file.
var ErrNotPointer = errors.New("not an LFS pointer")

// ParsePointer reads pointer file text.
func ParsePointer(b []byte) (Pointer, error) {
	if len(b) >= 1024 || !bytes.HasPrefix(b, []byte(pointerVersion+"\n")) {
		return Pointer{}, ErrNotPointer
	}
	var p Pointer
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n")[1:] {
		key, val, _ := strings.Cut(line, " ")
		switch key {
		case "oid":
			oid, ok := strings.CutPrefix(val, "sha256:")
			if !ok || !validOID(oid) {
				return Pointer{}, fmt.Errorf("%w: bad oid %q", ErrNotPointer, val)
			}
			p.OID = oid
		case "size":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				return Pointer{}, fmt.Errorf("%w: bad size %q", ErrNotPointer, val)
			}
			p.Size = n
		}
	}
	if p.OID == "" {
		return Pointer{}, fmt.Errorf("%w: no oid", ErrNotPointer)
	}
	return p, nil
}

// IsPointer reports whether b is LFS pointer text.
func IsPointer(b []byte) bool {
	_, err := ParsePointer(b)
	return err == nil
}

func validOID(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// HashFile computes a file's pointer in one streaming pass.
func HashFile(path string) (Pointer, error) {
	f, err := os.Open(path)
	if err != nil {
		return Pointer{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Pointer{}, fmt.Errorf("hash %s: %w", path, err)
	}
	return Pointer{OID: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// ErrObjectMismatch reports downloaded bytes that do not match their pointer.
var ErrObjectMismatch = errors.New("LFS object does not match its pointer")

// WriteVerified copies r into dst atomically, checking that the bytes hash
// and count to p. On any error dst is left untouched and no temp file stays.
// It does not fsync: a download can always be fetched again, and readers of
// cached objects verify them before use; callers that need durability (a
// commit staging the file) sync it themselves.
func WriteVerified(r io.Reader, p Pointer, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".lfs-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, p.Size+1))
	if err != nil {
		return fmt.Errorf("download object %s: %w", short(p.OID), err)
	}
	if n != p.Size {
		return fmt.Errorf("%w: %s: got %d bytes, want %d", ErrObjectMismatch, short(p.OID), n, p.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.OID {
		return fmt.Errorf("%w: %s: sha256 is %s", ErrObjectMismatch, short(p.OID), short(got))
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	ok = true
	return nil
}

func short(oid string) string {
	if len(oid) > 12 {
		return oid[:12]
	}
	return oid
}
