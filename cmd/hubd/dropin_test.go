package main

// End-to-end tests of the drop-in commands against a hubd child process:
// sendmail called as cron, PHP's mail() and mail(1) call it, while hubd runs
// and while it is down, and as an unprivileged user through a setgid binary.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hubd/internal/hubtest"
)

var (
	sendmailOnce   sync.Once
	sendmailBinary string
	sendmailErr    error
)

// buildSendmail builds cmd/sendmail once into a world-readable directory
// (the unprivileged test copies it from there).
func buildSendmail(t *testing.T) string {
	t.Helper()
	sendmailOnce.Do(func() {
		dir := filepath.Dir(hubdBinary)
		sendmailBinary = filepath.Join(dir, "sendmail")
		out, err := exec.Command("go", "build", "-o", sendmailBinary, "../sendmail").CombinedOutput()
		if err != nil {
			sendmailErr = fmt.Errorf("building sendmail: %v\n%s", err, out)
		}
	})
	if sendmailErr != nil {
		t.Fatal(sendmailErr)
	}
	return sendmailBinary
}

// dropinConfig is a hub whose hostname is its accepted domain, so that bare
// names (root, as cron writes) are local mailboxes.
func dropinConfig(t *testing.T, dir, addr, extra string) string {
	t.Helper()
	return writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname  = "example.test"
  spool_dir = "spool"
  %s
}
accepted_domain "example.test" {}
mailbox "root@example.test" { maildir = "mail/root" }
mailbox "alice@example.test" { maildir = "mail/alice" }
mailbox "bob@example.test" { maildir = "mail/bob" }
receive_connector "in" { bind = [%q] }
`, extra, addr))
}

// sendmailCall is one way a program calls sendmail.
type sendmailCall struct {
	name  string
	args  []string
	input string
	box   string   // the Maildir it must reach
	also  []string // other Maildirs that get a copy (Bcc), counted so that waits by count are exact
	want  []string // in the delivered message (unfolded)
	not   []string // not in it
}

// callers are cron (cronie's invocation), PHP's mail() (sendmail_path
// "sendmail -t -i" plus -f from its fifth argument) and a script's plain call.
var callers = []sendmailCall{
	{name: "cron", args: []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"},
		input: "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts /etc/cron.daily\n" +
			"MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nX-Cron-Env: <SHELL=/bin/sh>\n\noutput\n.\nmore output\n",
		box:  "root",
		want: []string{"Subject: Cron <root@host>", "\n.\nmore output", "(hubd pickup, from userid ", "Message-ID: <", "Date: "},
	},
	{name: "php", args: []string{"-t", "-i", "-f", "web@example.org"},
		input: "To: alice@example.test\nSubject: order 42\nBcc: bob@example.test\nX-PHP-Originating-Script: 33:shop.php\n\nThank you.\n",
		box:   "alice",
		also:  []string{"bob"},
		want:  []string{"Subject: order 42", "From: web@example.org", "Return-Path: <web@example.org>"},
		not:   []string{"Bcc:"},
	},
	{name: "plain", args: []string{"alice@example.test"},
		input: "Subject: no -i\n\nfirst\n.\nnot sent\n",
		box:   "alice",
		want:  []string{"Subject: no -i", "first"},
		not:   []string{"not sent"},
	},
}

// runSendmail runs bin with args, input on stdin, HUBD_CONFIG=cfg.
func runSendmail(t *testing.T, bin, cfg string, args []string, input string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HUBD_CONFIG="+cfg)
	cmd.Stdin = strings.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// waitMaildir polls the Maildir until it holds n messages and returns them
// unfolded.
func waitMaildir(t *testing.T, dir, box string, n int) []string {
	t.Helper()
	msgs := hubtest.WaitMaildir(t, filepath.Join(dir, "mail", box), n, 20*time.Second)
	for i, m := range msgs {
		msgs[i] = strings.NewReplacer("\r\n", "\n", "\n\t", " ", "\n ", " ").Replace(m)
	}
	return msgs
}

func checkMessage(t *testing.T, c sendmailCall, msg string) {
	t.Helper()
	for _, w := range c.want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: delivered message lacks %q:\n%s", c.name, w, msg)
		}
	}
	for _, w := range c.not {
		if strings.Contains(msg, w) {
			t.Errorf("%s: delivered message has %q:\n%s", c.name, w, msg)
		}
	}
}

// TestSendmailCallersWhileRunningAndDown: cron, PHP and a plain call, then
// mail(1), through the sendmail binary and `hubd sendmail`, while hubd runs
// (picked up at once) and while it is down (exit 0, delivered once it
// starts).
func TestSendmailCallersWhileRunningAndDown(t *testing.T) {
	bin := buildSendmail(t)
	dir := t.TempDir()
	addr := freePort(t)
	cfg := dropinConfig(t, dir, addr, "")
	p := startHubd(t, cfg, addr)
	count := map[string]int{}
	send := func(phase string) {
		for _, c := range callers {
			code, stderr := runSendmail(t, bin, cfg, c.args, c.input)
			if code != 0 || stderr != "" {
				t.Fatalf("%s %s: exit %d, stderr %q", phase, c.name, code, stderr)
			}
			count[c.box]++
			for _, b := range c.also {
				count[b]++
			}
		}
		// The same through hubd's own subcommand.
		code, stderr := runSendmail(t, hubdBinary, cfg, []string{"sendmail", "-i", "bob"}, "Subject: via hubd "+phase+"\n\nhi\n")
		if code != 0 || stderr != "" {
			t.Fatalf("hubd sendmail: exit %d, stderr %q", code, stderr)
		}
		count["bob"]++
		mailx(t, bin, cfg, dir, phase)
		count["alice"]++
	}
	send("running")
	for box, n := range count {
		waitMaildir(t, dir, box, n)
	}
	for _, c := range callers {
		msgs := waitMaildir(t, dir, c.box, count[c.box])
		found := false
		for _, m := range msgs {
			if strings.Contains(m, c.want[0]) {
				found = true
				checkMessage(t, c, m)
			}
		}
		if !found {
			t.Errorf("%s: no message with %q", c.name, c.want[0])
		}
	}

	if err := p.stop(t, 20*time.Second); err != nil {
		t.Fatalf("hubd stop: %v", err)
	}
	send("down")
	left, _ := filepath.Glob(filepath.Join(dir, "maildrop", "*"))
	if len(left) != len(callers)+2+1 { // the messages and corrupt/
		t.Fatalf("maildrop while hubd is down holds %d entries, want %d: %v", len(left), len(callers)+3, left)
	}
	startHubd(t, cfg, addr)
	for box, n := range count {
		waitMaildir(t, dir, box, n)
	}
	left, _ = filepath.Glob(filepath.Join(dir, "maildrop", "*"))
	if len(left) != 1 {
		t.Errorf("maildrop after pickup: %v, want only corrupt/", left)
	}
	msgs := waitMaildir(t, dir, "bob", count["bob"])
	if !strings.Contains(strings.Join(msgs, ""), "Subject: via hubd down") {
		t.Errorf("the message sent while hubd was down did not arrive")
	}
}

// mailx sends one message with mail(1) (bsd-mailx), its sendmail pointed at
// ours by a mailrc.
func mailx(t *testing.T, bin, cfg, dir, phase string) {
	t.Helper()
	mail, err := exec.LookPath("bsd-mailx")
	if err != nil {
		t.Skip("bsd-mailx not installed (.ci/run installs it)")
	}
	rc := filepath.Join(dir, "mailrc")
	if err := os.WriteFile(rc, []byte("set sendmail="+bin+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mail, "-s", "mailx "+phase, "alice@example.test")
	cmd.Env = append(os.Environ(), "HUBD_CONFIG="+cfg, "MAILRC="+rc, "HOME="+dir)
	cmd.Stdin = strings.NewReader("sent by mail(1)\n")
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("mail(1): %v %s", err, out)
	}
}

// TestSendmailUnprivileged installs sendmail setgid to a drop group (a bare
// gid: nothing is added to /etc/group), runs it as nobody, and checks that
// nobody can drop mail but can neither list, read nor remove the maildrop's
// files; and that without the setgid bit nobody gets exit 73.
func TestSendmailUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chgrp, set the setgid bit and run as nobody")
	}
	const dropGID = 64123
	bin := buildSendmail(t)
	base, err := os.MkdirTemp("", "hubd-dropin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755) // nobody must reach the binary, the config and the maildrop
	setgid := filepath.Join(base, "sendmail")
	copyFile(t, bin, setgid)
	if err := os.Chown(setgid, 0, dropGID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(setgid, 0o755|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(base, "sendmail-plain")
	copyFile(t, bin, plain)
	addr := freePort(t)
	cfg := dropinConfig(t, base, addr, fmt.Sprintf("maildrop_group = \"%d\"", dropGID))
	p := startHubd(t, cfg, addr)
	drop := filepath.Join(base, "maildrop")
	st, err := os.Stat(drop)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModePerm != 0o730 || st.Mode()&os.ModeSticky == 0 || st.Sys().(*syscall.Stat_t).Gid != dropGID {
		t.Fatalf("maildrop mode %v gid %d, want drwx-wx--T group %d", st.Mode(), st.Sys().(*syscall.Stat_t).Gid, dropGID)
	}

	code, stderr := asNobody(t, cfg, "Subject: from nobody\n\nhi\n", setgid, "alice@example.test")
	if code != 0 {
		t.Fatalf("setgid sendmail as nobody: exit %d: %s", code, stderr)
	}
	msgs := waitMaildir(t, base, "alice", 1)
	if !strings.Contains(msgs[0], "(hubd pickup, from userid 65534 nobody)") || !strings.Contains(msgs[0], "<nobody@example.test>") {
		t.Errorf("message from nobody:\n%s", msgs[0])
	}
	code, stderr = asNobody(t, cfg, "Subject: x\n\nhi\n", plain, "alice@example.test")
	if code != 73 || !strings.Contains(stderr, "permission denied") {
		t.Errorf("sendmail without setgid as nobody: exit %d, %q; want 73 and permission denied", code, stderr)
	}

	// Someone else's file, left while hubd is down.
	p.stop(t, 20*time.Second)
	if code, stderr := runSendmail(t, bin, cfg, []string{"bob@example.test"}, "Subject: root's\n\nsecret\n"); code != 0 {
		t.Fatalf("root's sendmail: %d %s", code, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(drop, strings.Repeat("?", 21)))
	if len(files) != 1 {
		t.Fatalf("maildrop holds %v", files)
	}
	for _, c := range [][]string{{"/bin/ls", drop}, {"/bin/cat", files[0]}, {"/bin/rm", "-f", files[0]}, {"/bin/mv", files[0], drop + "/x"}} {
		if code, _ := asNobody(t, cfg, "", c[0], c[1:]...); code == 0 {
			t.Errorf("nobody could %v", c)
		}
		if code, _ := asNobody(t, cfg, "", setgid, "-bs"); code != 0 { // sanity: the setgid binary still runs
			t.Errorf("sendmail -bs as nobody: exit %d", code)
		}
	}
	if _, err := os.Stat(files[0]); err != nil {
		t.Errorf("root's file was touched: %v", err)
	}
}

// asNobody runs a program as nobody:nogroup with no supplementary groups.
func asNobody(t *testing.T, cfg, input, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"HUBD_CONFIG=" + cfg, "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
