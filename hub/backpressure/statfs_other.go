//go:build !(linux || darwin || freebsd)

package backpressure

import (
	"errors"
	"runtime"
)

func statfs(path string) (free, total uint64, err error) {
	return 0, 0, errors.New("statfs: not supported on " + runtime.GOOS)
}
