package backpressure

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// SystemProbe measures the real system: statfs(2) of the spool's filesystem
// (on Linux, macOS and FreeBSD) and, on Linux, /proc/self/status (VmRSS) and
// /proc/meminfo (MemTotal). Elsewhere the missing measure returns an error
// and the monitor ignores that resource.
type SystemProbe struct{}

// DiskUsage returns Bavail × Bsize (the space an unprivileged process may
// still use: root's reserved blocks do not count, since hubd should not run
// as root) and Blocks × Bsize.
func (SystemProbe) DiskUsage(path string) (free, total uint64, err error) {
	return statfs(path)
}

// Memory returns VmRSS from /proc/self/status and MemTotal from
// /proc/meminfo.
func (SystemProbe) Memory() (processRSS, totalRAM uint64, err error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	if processRSS, err = procKB(status, "VmRSS"); err != nil {
		return 0, 0, fmt.Errorf("memory: /proc/self/status: %w", err)
	}
	if totalRAM, err = procKB(meminfo, "MemTotal"); err != nil {
		return 0, 0, fmt.Errorf("memory: /proc/meminfo: %w", err)
	}
	return processRSS, totalRAM, nil
}

// procKB finds the line "key:   1234 kB" in a /proc file and returns the
// figure in bytes (proc(5): these "kB" are KiB).
func procKB(data []byte, key string) (uint64, error) {
	prefix := []byte(key + ":")
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%s: unexpected %q", key, bytes.TrimSpace(line))
		}
		n, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil || n > 1<<53 {
			return 0, fmt.Errorf("%s: unexpected %q", key, bytes.TrimSpace(line))
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("no %s line", key)
}
