package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/internal/certgen"
)

// checkAsUnprivileged runs `hubd check` as a user whom permission bits
// stop: the test's own user, or nobody when the test runs as root (root
// passes every permission check). base must be reachable by nobody.
func checkAsUnprivileged(t *testing.T, base string, args ...string) (string, int) {
	t.Helper()
	bin := filepath.Join(base, "hubd")
	copyFile(t, hubdBinary, bin)
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	}
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// TestCheckPaths: `hubd check` reports what would stop `hubd run` — a spool
// that cannot be created, directories it may not write, a key it cannot
// read or that does not match its certificate — each at its attribute's
// file:line, all at once; an unwritable Maildir is a warning. -paths=false
// skips the probes.
func TestCheckPaths(t *testing.T) {
	base, err := os.MkdirTemp("", "hubd-paths-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	ro := filepath.Join(base, "ro")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	// Writable by whoever runs the check (chmod: the umask may take bits off).
	if err := os.Mkdir(filepath.Join(base, "w"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(base, "w"), 0o777)
	for _, pair := range []string{"a", "b"} {
		if err := certgen.WriteFiles(filepath.Join(base, pair, "cert.pem"), filepath.Join(base, pair, "key.pem"),
			[]string{"mx.example.test"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(base, pair), 0o755)
		os.Chmod(filepath.Join(base, pair, "key.pem"), 0o644)
	}
	secret := filepath.Join(base, "secret.pem")
	copyFile(t, filepath.Join(base, "a", "key.pem"), secret)
	os.Chmod(secret, 0)
	cfg := filepath.Join(base, "hubd.hcl")
	src := `hub {
  hostname     = "mx.example.test"
  spool_dir    = "/dev/null/spool"
  maildrop_dir = "w/drop"
  tracking_log {
    dir = "ro/log"
  }
}
admin {
  socket = "ro/admin.sock"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" {
  maildir = "ro/mail/alice"
}
receive_connector "mismatched" {
  bind = ["127.0.0.1:0"]
  tls {
    cert_file = "a/cert.pem"
    key_file  = "b/key.pem"
  }
}
receive_connector "unreadable" {
  bind = ["127.0.0.2:0"]
  tls {
    cert_file = "a/cert.pem"
    key_file  = "secret.pem"
  }
}
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := checkAsUnprivileged(t, base, "check", "-config", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	flat := strings.Join(strings.Fields(out), " ") // the diagnostics are wrapped at 100 columns
	for _, want := range []struct{ what, re string }{
		{"spool", `(?s)Error: Unusable spool directory\s+on \S*hubd.hcl line 3.*/dev/null/spool cannot be created: /dev/null is not a directory`},
		{"tracking log", `(?s)Error: Unusable tracking log directory\s+on \S*hubd.hcl line 6.*/ro/log cannot be created: \S*/ro is not writable \(permission denied\).*ReadWritePaths=`},
		{"admin socket", `(?s)Error: Unusable admin socket's directory\s+on \S*hubd.hcl line 10.*/ro is not writable`},
		{"Maildir", `(?s)Warning: Maildir not writable\s+on \S*hubd.hcl line 14.*would be deferred`},
		{"key pair", `(?s)Error: TLS key does not match\s+on \S*hubd.hcl line 20.*are not a key pair`},
		{"unreadable key", `(?s)Error: Unreadable TLS private key\s+on \S*hubd.hcl line 27.*secret.pem cannot be read: permission denied`},
		{"summary", `hubd.hcl: hubd run would fail \(5 errors\)`},
	} {
		if !regexp.MustCompile(want.re).MatchString(flat) {
			t.Errorf("%s: output does not match %s:\n%s", want.what, want.re, out)
		}
	}
	if strings.Contains(out, "maildrop") {
		t.Errorf("the maildrop (creatable) is reported:\n%s", out)
	}
	if strings.Contains(out, "configuration OK") {
		t.Errorf("configuration OK despite the errors:\n%s", out)
	}

	out, code = checkAsUnprivileged(t, base, "check", "-paths=false", "-config", cfg)
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Errorf("-paths=false: exit %d\n%s", code, out)
	}
}

// TestCheckPathsReadOnlyMount is the bug the first unit (examples/hubd.service) shipped with:
// under ProtectSystem=strict, a directory outside the unit's writable paths
// is on a read-only mount, which stops even root. `hubd check` (the unit's
// ExecStartPre) must say so, as `hubd run` would fail. It mounts a read-only
// tmpfs, so it needs root.
func TestCheckPathsReadOnlyMount(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a read-only tmpfs needs root; TestCheckPaths covers permissions")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "log")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
		t.Skipf("skipping: mount -o ro -t tmpfs failed (%v); the container may not allow it", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	cfg := writeConfig(t, dir, `hub {
  hostname  = "mx.example.test"
  spool_dir = "spool"
  tracking_log {
    dir = "log/hubd/tracking"
  }
}
receive_connector "in" { bind = ["127.0.0.1:0"] }
`)
	out, code := runHubd(t, "check", "-config", cfg)
	flat := strings.Join(strings.Fields(out), " ")
	if code != 1 || !regexp.MustCompile(`Unusable tracking log directory\s+on \S*hubd.hcl line 5.*read-only file system`).MatchString(flat) {
		t.Fatalf("exit %d, want 1 naming line 5 and the read-only file system:\n%s", code, out)
	}
	// And hubd run indeed fails there.
	out, code = runHubd(t, "run", "-config", cfg)
	if code != 1 || !strings.Contains(out, "read-only file system") {
		t.Errorf("hubd run: exit %d\n%s", code, out)
	}
}
