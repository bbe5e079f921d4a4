//go:build !unix

package local

import (
	"context"
	"errors"
)

func fileLock(ctx context.Context, path string) (func(), error) {
	return nil, errors.New("lock: file locking is not supported on this system")
}
