package hubtest

import (
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBackPressureOnSmallFilesystem puts the spool on a real 32 MB tmpfs
// and fills it: with the real statfs probe, anonymous mail is refused once
// free space falls under disk_free_medium, all mail under disk_free_high —
// both before the filesystem is full — and mail flows again when space
// returns. Every message accepted along the way is delivered. It needs
// root (mount); without it the injected-probe test covers the same path.
func TestBackPressureOnSmallFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a tmpfs needs root; TestBackPressure covers the logic with an injected probe")
	}
	fs := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", fs, "tmpfs", 0, "size=32m,mode=0700"); err != nil {
		t.Skipf("skipping: mount -t tmpfs failed (%v); the container may not allow it", err)
	}
	h := Start(t, `
hub {
  hostname  = "hub.example.test"
  spool_dir = "`+fs+`/spool"
  back_pressure {
    disk_free_high   = "8MB"
    disk_free_medium = "16MB"
    check_interval   = "20ms"
  }
}
accepted_domain "example.test" {}
mailbox "alice@example.test" { maildir = "{{dir}}/mail/alice" }
receive_connector "in" {
  bind            = ["127.0.0.1:0"]
  tarpit_interval = "0s"
}
`, Options{})
	// A lazy unmount: this cleanup runs before the hub's own (last in, first
	// out), and the filesystem goes once the stopping hub lets go of it.
	t.Cleanup(func() { syscall.Unmount(fs, syscall.MNT_DETACH) })
	in := h.Addr(t, "in")
	sent := 0
	send := func() error {
		err := smtp.SendMail(in, nil, "someone@remote.test", []string{"alice@example.test"}, []byte("Subject: x\r\n\r\nhello\r\n"))
		if err == nil {
			sent++
		}
		return err
	}
	waitRefused := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := send()
			if err != nil && strings.Contains(err.Error(), "4.3.1") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still accepted (last error %v), status %+v", what, err, h.Pressure.Status())
			}
		}
	}
	if err := send(); err != nil {
		t.Fatalf("empty filesystem: %v", err)
	}
	fill := func(name string, mb int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(fs, name), make([]byte, mb<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fill("junk1", 20) // about 12 MB left: under medium
	waitRefused("medium")
	fill("junk2", 8) // about 4 MB left: under high, yet not full
	waitRefused("high")
	var st syscall.Statfs_t
	if err := syscall.Statfs(fs, &st); err != nil || st.Bavail == 0 {
		t.Fatalf("filesystem full before refusing: %v %d", err, st.Bavail)
	}
	os.Remove(filepath.Join(fs, "junk1"))
	os.Remove(filepath.Join(fs, "junk2"))
	deadline := time.Now().Add(10 * time.Second)
	for send() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("mail still refused after space returned: %+v", h.Pressure.Status())
		}
	}
	WaitMaildir(t, filepath.Join(h.Dir, "mail", "alice"), sent, 10*time.Second)
	t.Logf("%d messages accepted and delivered across normal, medium, high and back", sent)
}
