package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"hubd/examples/bench/internal/benchkit"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports; the standard library cannot ask
// sysconf(_SC_CLK_TCK) without cgo, so it is a constant here.
const clockTicks = 100

// procStat is what relaybench needs from one /proc/<pid>/stat line (proc(5)).
type procStat struct {
	pid, ppid int
	// utime, stime: this process's own CPU time; cutime, cstime: the CPU time
	// of its children that it has waited for (reaped), in clock ticks.
	utime, stime, cutime, cstime uint64
}

// parseStat parses one /proc/<pid>/stat line. The command name (field 2) is
// in parentheses and may itself hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStat(line string) (procStat, error) {
	open := strings.IndexByte(line, '(')
	closing := strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return procStat{}, fmt.Errorf("stat line without (comm): %q", line)
	}
	var st procStat
	var err error
	if st.pid, err = strconv.Atoi(strings.TrimSpace(line[:open])); err != nil {
		return procStat{}, fmt.Errorf("stat pid: %w", err)
	}
	// After ")": field 3 (state) is rest[0], so field k is rest[k-3].
	rest := strings.Fields(line[closing+1:])
	if len(rest) < 15 {
		return procStat{}, fmt.Errorf("stat line too short: %q", line)
	}
	if st.ppid, err = strconv.Atoi(rest[4-3]); err != nil {
		return procStat{}, fmt.Errorf("stat ppid: %w", err)
	}
	ticks := []*uint64{&st.utime, &st.stime, &st.cutime, &st.cstime} // fields 14..17
	for i, p := range ticks {
		v, err := strconv.ParseInt(rest[14-3+i], 10, 64) // cutime/cstime are signed in proc(5)
		if err != nil {
			return procStat{}, fmt.Errorf("stat field %d: %w", 14+i, err)
		}
		if v > 0 {
			*p = uint64(v)
		}
	}
	return st, nil
}

// readAllStats reads /proc/<pid>/stat of every process under procRoot
// (normally "/proc"). Processes that vanish while being read are skipped.
func readAllStats(procRoot string) (map[int]procStat, error) {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	all := make(map[int]procStat, len(entries))
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue
		}
		st, err := parseStat(string(bytes.TrimSpace(b)))
		if err != nil {
			continue
		}
		all[st.pid] = st
	}
	return all, nil
}

// processTree returns root and all its living descendants found in all.
func processTree(all map[int]procStat, root int) []procStat {
	children := make(map[int][]int)
	for pid, st := range all {
		children[st.ppid] = append(children[st.ppid], pid)
	}
	var tree []procStat
	stack := []int{root}
	seen := map[int]bool{}
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		st, ok := all[pid]
		if !ok || seen[pid] {
			continue
		}
		seen[pid] = true
		tree = append(tree, st)
		stack = append(stack, children[pid]...)
	}
	return tree
}

// treeCPUTicks is the CPU time, in clock ticks, charged to the process tree
// under root: for every living member utime+stime+cutime+cstime. A process's
// own time is counted while it lives; once reaped it moves into its parent's
// cutime/cstime, so it is counted exactly once either way — as long as its
// reaper is in the tree (see the package doc for what escapes).
func treeCPUTicks(procRoot string, root int) (uint64, error) {
	all, err := readAllStats(procRoot)
	if err != nil {
		return 0, err
	}
	if _, ok := all[root]; !ok {
		return 0, fmt.Errorf("process %d not found in %s", root, procRoot)
	}
	var sum uint64
	for _, st := range processTree(all, root) {
		sum += st.utime + st.stime + st.cutime + st.cstime
	}
	return sum, nil
}

// treePssKB sums the proportional set size (Pss, kB) of root and its living
// descendants. PSS charges each shared page to its sharers in equal parts, so
// the sum over a tree of processes sharing libraries is not inflated.
func treePssKB(procRoot string, root int) (uint64, error) {
	all, err := readAllStats(procRoot)
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, st := range processTree(all, root) {
		b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(st.pid), "smaps_rollup"))
		if err != nil {
			continue // exited meanwhile, or a kernel thread
		}
		kb, err := benchkit.RollupKB(b, "Pss:")
		if err != nil {
			continue
		}
		sum += kb
	}
	return sum, nil
}
