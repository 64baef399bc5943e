package backpressure

import (
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestTmpfsFills mounts a real 8 MB tmpfs, fills it and watches the system
// probe drive the level to Medium, High and back. It needs root (or
// CAP_SYS_ADMIN) and a kernel that lets this container mount tmpfs.
func TestTmpfsFills(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a tmpfs needs root; the injected-probe tests cover the logic")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		t.Skipf("skipping: mount -t tmpfs %s failed (%v); the container may not allow it", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})

	logs := &logRecorder{}
	cfg := enabled()
	cfg.DiskFreeHigh = 2 * mb
	cfg.DiskFreeMedium = 4 * mb // Normal again from 4 MB + 2% of 8 MB
	m := New(Options{Dir: dir, Config: cfg, Logger: slog.New(logs)})
	m.Check()
	st := m.Status().Disk
	if !st.Known || st.Total != 8*mb || st.Free != 8*mb || m.Level() != Normal {
		t.Fatalf("empty 8 MB tmpfs: %+v, level %v", st, m.Level())
	}

	// leave rewrites one file so that about left bytes stay free (tmpfs
	// counts whole pages; every size here is a multiple of 4 KB).
	leave := func(left uint64) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "fill"), make([]byte, 8*mb-left), 0o600); err != nil {
			t.Fatalf("fill to leave %d bytes: %v", left, err)
		}
		m.Check()
	}
	expect := func(want Level) {
		t.Helper()
		if got := m.Level(); got != want {
			t.Fatalf("level %v, want %v (%+v)", got, want, m.Status().Disk)
		}
	}
	leave(3 * mb)
	expect(Medium)
	if m.Reserve(1*mb+512<<10) || !m.Reserve(512<<10) {
		t.Fatalf("3 MB free: Reserve must allow down to 2 MB free and no further (%+v)", m.Status().Disk)
	}
	leave(1 * mb)
	expect(High)
	if m.Reserve(1) {
		t.Fatal("Reserve granted space below High")
	}
	// The filesystem is not full: the refusals come first.
	extra := filepath.Join(dir, "extra")
	if err := os.WriteFile(extra, make([]byte, 512<<10), 0o600); err != nil {
		t.Fatalf("the filesystem should still have room: %v", err)
	}
	if err := os.Remove(extra); err != nil {
		t.Fatal(err)
	}
	leave(3 * mb)
	expect(High) // hysteresis: High until 4 MB free
	leave(4*mb + 64<<10)
	expect(Medium) // Normal only from 4 MB + 2% of 8 MB
	if err := os.Remove(filepath.Join(dir, "fill")); err != nil {
		t.Fatal(err)
	}
	m.Check()
	expect(Normal)
	if !m.Reserve(5 * mb) {
		t.Fatalf("empty again: Reserve refused (%+v)", m.Status().Disk)
	}
	want := []string{"WARN back pressure medium", "WARN back pressure high", "INFO back pressure medium", "INFO back pressure normal"}
	got := logs.take()
	if len(got) != len(want) {
		t.Fatalf("log lines %q", got)
	}
	for i := range want {
		if len(got[i]) < len(want[i]) || got[i][:len(want[i])] != want[i] {
			t.Fatalf("log line %d: %q, want %q…", i, got[i], want[i])
		}
	}
	t.Logf("log lines: %q", got)
}
