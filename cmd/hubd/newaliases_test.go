package main

// End to end: an aliases(5) file read by a hubd child process, edited and
// put in force with newaliases (the sendmail binary linked as newaliases,
// `hubd newaliases`, `sendmail -bi`), broken, and checked while hubd is
// down.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runCommand runs bin with args and HUBD_CONFIG=cfg; cred, when set, is
// the user to run as.
func runCommand(t *testing.T, cfg string, cred *syscall.Credential, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"HUBD_CONFIG=" + cfg, "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

func TestNewaliasesEndToEnd(t *testing.T) {
	// A directory nobody can traverse too, for the permission case.
	dir, err := os.MkdirTemp("", "hubd-newaliases-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	newaliases := filepath.Join(dir, "newaliases")
	copyFile(t, buildSendmail(t), filepath.Join(dir, "sendmail"))
	if err := os.Symlink("sendmail", newaliases); err != nil {
		t.Fatal(err)
	}
	aliases := filepath.Join(dir, "aliases")
	writeAliases := func(s string) {
		t.Helper()
		if err := os.WriteFile(aliases, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := freePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname  = "example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" { maildir = "mail/alice" }
mailbox "bob@example.test" { maildir = "mail/bob" }
mailbox "carol@example.test" { maildir = "mail/carol" }
receive_connector "in" { bind = [%q] }
aliases_file "aliases" {}
`, addr))
	writeAliases("# test aliases\npostmaster: alice\nteam: alice,\n  bob\n")
	p := startHubd(t, cfg, addr)
	send := func(id, to string) {
		t.Helper()
		if err := sendOne(addr, id, []string{to}); err != nil {
			t.Fatalf("sending %s to %s: %v", id, to, err)
		}
	}

	// An alias from the file, over SMTP, reaches its targets' Maildirs.
	send("team-1", "team")
	waitMaildir(t, dir, "alice", 1)
	waitMaildir(t, dir, "bob", 1)
	if r := rcptReply(t, addr, "sales@example.test"); !strings.HasPrefix(r, "550 5.1.1") {
		t.Fatalf("sales before it exists: %s", r)
	}

	// A new alias, put in force by newaliases.
	writeAliases("# test aliases\npostmaster: alice\nteam: alice,\n  bob\nsales: carol\n")
	code, stdout, stderr := runCommand(t, cfg, nil, newaliases)
	if code != 0 || !strings.Contains(stdout, "3 aliases from aliases files; hubd reloaded it (config sha256:") || stderr != "" {
		t.Fatalf("newaliases: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	send("sales-1", "sales")
	waitMaildir(t, dir, "carol", 1)

	// A broken file: 78, file:line on stderr, nothing reloaded, the old
	// aliases still work.
	writeAliases("# test aliases\npostmaster: alice\nteam: alice,\n  |/usr/bin/logger\nsales: bob\n")
	code, stdout, stderr = runCommand(t, cfg, nil, hubdBinary, "newaliases", "-config", cfg)
	if code != 78 || stdout != "" || !strings.Contains(stderr, "on "+aliases+" line 4:") ||
		!strings.Contains(stderr, "1 error (at "+aliases+":4:3); nothing was reloaded") {
		t.Fatalf("newaliases on a broken file: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	send("sales-2", "sales")
	waitMaildir(t, dir, "carol", 2)
	// hubd itself refuses it too, should anyone send SIGHUP.
	code, _, stderr = runCommand(t, cfg, nil, filepath.Join(dir, "sendmail"), "-bi")
	if code != 78 || !strings.Contains(stderr, aliases+":4:3") {
		t.Fatalf("sendmail -bi on a broken file: exit %d, stderr:\n%s", code, stderr)
	}

	// Not allowed on the admin socket (mode 0660, root's): 77.
	writeAliases("# test aliases\npostmaster: alice\nsales: bob\n")
	if os.Geteuid() == 0 {
		nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
		code, _, stderr = runCommand(t, cfg, nobody, newaliases)
		if code != 77 || !strings.Contains(stderr, "admin socket") || !strings.Contains(stderr, "permission denied") {
			t.Errorf("newaliases as nobody: exit %d, stderr %q", code, stderr)
		}
	}

	// hubd down: the file is checked, and read when hubd starts.
	if err := p.stop(t, 20*time.Second); err != nil {
		t.Fatalf("hubd stop: %v", err)
	}
	code, stdout, stderr = runCommand(t, cfg, nil, newaliases)
	if code != 0 || !strings.HasSuffix(stdout, "hubd is not running; the aliases will be read when it starts\n") || stderr != "" {
		t.Fatalf("newaliases while hubd is down: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	startHubd(t, cfg, addr)
	send("sales-3", "sales")
	waitMaildir(t, dir, "bob", 2)
	if r := rcptReply(t, addr, "team@example.test"); !strings.HasPrefix(r, "550 5.1.1") {
		t.Errorf("team after it was removed: %s", r)
	}
}

// TestCheckAliasesExample: examples/aliases, as its comment says to use it
// with examples/dev.hcl, passes `hubd check`.
func TestCheckAliasesExample(t *testing.T) {
	dir := t.TempDir()
	dev, err := os.ReadFile("../../examples/dev.hcl")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, "../../examples/aliases", filepath.Join(dir, "aliases"))
	cfg := writeConfig(t, dir, string(dev)+"\naliases_file \"aliases\" { domains = [\"example.test\"] }\n")
	if out, code := runHubd(t, "check", "-config", cfg); code != 0 {
		t.Fatalf("hubd check: exit %d\n%s", code, out)
	}
}
