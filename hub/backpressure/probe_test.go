package backpressure

import (
	"path/filepath"
	"runtime"
	"testing"
)

func TestProcKB(t *testing.T) {
	status := []byte("Name:\thubd\nVmPeak:\t  123456 kB\nVmRSS:\t   20480 kB\nThreads:\t8\n")
	if n, err := procKB(status, "VmRSS"); err != nil || n != 20480<<10 {
		t.Fatalf("VmRSS: %d, %v", n, err)
	}
	meminfo := []byte("MemTotal:        8041552 kB\nMemFree:         1234 kB\n")
	if n, err := procKB(meminfo, "MemTotal"); err != nil || n != 8041552<<10 {
		t.Fatalf("MemTotal: %d, %v", n, err)
	}
	for _, bad := range []string{"VmRSS:\t20480 MB\n", "VmRSS:\tlots kB\n", "VmRSS:\n", "Name:\thubd\n", "VmRSSX: 1 kB\n"} {
		if n, err := procKB([]byte(bad), "VmRSS"); err == nil {
			t.Errorf("%q: %d, want an error", bad, n)
		}
	}
}

func TestSystemProbe(t *testing.T) {
	dir := t.TempDir()
	free, total, err := SystemProbe{}.DiskUsage(dir)
	switch runtime.GOOS {
	case "linux", "darwin", "freebsd":
		if err != nil || free == 0 || total == 0 || free > total {
			t.Fatalf("DiskUsage(%s) = %d free of %d, %v", dir, free, total, err)
		}
	default:
		if err == nil {
			t.Fatalf("DiskUsage on %s: want an error", runtime.GOOS)
		}
	}
	if _, _, err := (SystemProbe{}).DiskUsage(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("DiskUsage of a missing directory: want an error")
	}
	rss, ram, err := SystemProbe{}.Memory()
	if runtime.GOOS != "linux" {
		if err == nil {
			t.Fatalf("Memory on %s: want an error (no /proc)", runtime.GOOS)
		}
		return
	}
	if err != nil || rss == 0 || ram == 0 || rss >= ram {
		t.Fatalf("Memory() = %d of %d, %v", rss, ram, err)
	}
	// The monitor works from the real probe (New with a nil Probe).
	m := New(Options{Dir: dir, Config: enabled()})
	m.Check()
	st := m.Status()
	if !st.Disk.Known || !st.Memory.Known || st.Disk.Free > st.Disk.Total {
		t.Fatalf("status from the system probe: %+v", st)
	}
}
