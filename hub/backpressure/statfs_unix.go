//go:build linux || darwin || freebsd

package backpressure

import (
	"fmt"
	"syscall"
)

func statfs(path string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	// The field types differ between platforms (FreeBSD's Bavail is signed
	// and goes negative when root's reserve is in use).
	bsize := uint64(max(int64(st.Bsize), 0))
	avail := uint64(max(int64(st.Bavail), 0))
	return avail * bsize, uint64(st.Blocks) * bsize, nil
}
