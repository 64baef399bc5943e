package benchkit

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// RollupKB returns the value (kB) of the line starting with key ("Rss:",
// "Pss:") in a /proc/<pid>/smaps_rollup file.
func RollupKB(rollup []byte, key string) (uint64, error) {
	return field(rollup, key, "smaps_rollup")
}

// StatusField returns the first number after key ("Threads:", "VmHWM:") in
// a /proc/<pid>/status file.
func StatusField(status []byte, key string) (uint64, error) {
	return field(status, key, "status")
}

// IOField returns the number after key ("write_bytes:", "wchar:") in a
// /proc/<pid>/io file.
func IOField(io []byte, key string) (uint64, error) {
	return field(io, key, "io")
}

// field returns the first number after key in a /proc file of
// "key value [unit]" lines.
func field(b []byte, key, file string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s line in %s", key, file)
}
