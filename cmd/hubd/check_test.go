package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/internal/certgen"
	"hubd/internal/hubtest"
	"hubd/policy/passhash"

	"golang.org/x/crypto/bcrypt"
)

func runHubd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(hubdBinary, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func TestCheckDevExample(t *testing.T) {
	out, code := runHubd(t, "check", "-config", "../../examples/dev.hcl")
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("hubd check examples/dev.hcl: exit %d\n%s", code, out)
	}
}

// installProduction copies examples/production.hcl into a temporary
// /etc/hubd as installed: beside the certificate files it names (made
// here), and, where the install step `groupadd --system hubd-drop` has not
// run (CI), with its maildrop_group set to this process's group instead.
func installProduction(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	src, err := os.ReadFile("../../examples/production.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := user.LookupGroup("hubd-drop"); err != nil {
		const group = `maildrop_group = "hubd-drop"`
		if !bytes.Contains(src, []byte(group)) {
			t.Fatalf("production.hcl lacks %s", group)
		}
		src = bytes.Replace(src, []byte(group), []byte(fmt.Sprintf(`maildrop_group = "%d"`, os.Getgid())), 1)
	}
	cfg = filepath.Join(dir, "hubd.hcl")
	if err := os.WriteFile(cfg, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := certgen.WriteFiles(filepath.Join(dir, "tls/fullchain.pem"), filepath.Join(dir, "tls/privkey.pem"),
		[]string{"mx1.example.com"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

// TestCheckProductionExample checks examples/production.hcl as installed.
// Its directories (/var/lib/hubd, /var/log/hubd, /run/hubd) need not exist:
// root may create them, and so the path checks pass as root; as another
// user they would not (as `hubd check` then says), so they are skipped.
func TestCheckProductionExample(t *testing.T) {
	dir, cfg := installProduction(t)
	args := []string{"check", "-config", cfg}
	if os.Geteuid() != 0 {
		t.Log("not root: checking production.hcl with -paths=false (its directories are root's to create)")
		args = append(args, "-paths=false")
	}
	out, code := runHubd(t, args...)
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("hubd check production.hcl: exit %d\n%s", code, out)
	}
	// Without the certificates the same file is an error naming the attribute.
	os.RemoveAll(filepath.Join(dir, "tls"))
	out, code = runHubd(t, args...)
	if code != 1 || !strings.Contains(out, "hubd.hcl line") || !strings.Contains(out, "fullchain.pem") {
		t.Fatalf("missing certificate not reported with file and line: exit %d\n%s", code, out)
	}
}

// TestCheckReportsEveryError: a file with several mistakes gets all of them
// at once, each with file and line, and a non-zero exit.
func TestCheckReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.hcl")
	src := `hub {
  spool_dir = "spool"
}
receive_connector "open" {
  bind             = ["127.0.0.1:2525"]
  remote_ip_ranges = ["0.0.0.0/0"]
  permissions {
    anonymous = ["submit", "relay"]
  }
  connection_timeout = "10 minutes"
  max_message_size   = "lots"
  colour = "blue"
}
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runHubd(t, "check", "-config", cfg)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, line := range []string{"bad.hcl line 8", "bad.hcl line 10", "bad.hcl line 11", "bad.hcl line 12"} {
		if !strings.Contains(out, line) {
			t.Errorf("diagnostics lack %q:\n%s", line, out)
		}
	}
	if !strings.Contains(strings.ToLower(out), "open relay") {
		t.Errorf("the open relay is not named:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	out, code := runHubd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "hubd ") {
		t.Fatalf("hubd version: exit %d %q", code, out)
	}
}

// TestSIGTERMLetsDATAFinish: SIGTERM while a client is in the middle of DATA
// stops new connections but lets that transaction finish with 250; the
// message is delivered (at the next start at the latest) and hubd exits 0.
func TestSIGTERMLetsDATAFinish(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname  = "term.example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
mailbox "bob@example.test" { maildir = "mail/bob" }
receive_connector "in" { bind = [%q] }
`, addr))
	p := startHubd(t, cfg, addr)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tp := textproto.NewConn(conn)
	expect := func(code int) string {
		t.Helper()
		_, msg, err := tp.ReadResponse(code)
		if err != nil {
			t.Fatalf("want %d: %v", code, err)
		}
		return msg
	}
	expect(220)
	tp.PrintfLine("EHLO client.example.test")
	expect(250)
	tp.PrintfLine("MAIL FROM:<someone@remote.test>")
	expect(250)
	tp.PrintfLine("RCPT TO:<bob@example.test>")
	expect(250)
	tp.PrintfLine("DATA")
	expect(354)
	tp.PrintfLine("Subject: sent across SIGTERM")
	tp.PrintfLine("")
	tp.PrintfLine("first half")

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Once hubd has stopped accepting, finish the transaction.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		// A connection may still be accepted by the kernel backlog; it must not get a greeting.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, "220") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("hubd still greets new connections after SIGTERM")
		}
	}
	tp.PrintfLine("second half")
	tp.PrintfLine(".")
	if msg := expect(250); !strings.Contains(msg, "queued") {
		t.Errorf("250 reply %q", msg)
	}
	tp.PrintfLine("QUIT")
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("hubd exit: %v\n%s", p.err, p.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("hubd did not exit after SIGTERM")
	}
	// The message is delivered now or, if delivery was cut short, at the next start.
	p2 := startHubd(t, cfg, addr)
	msgs := hubtest.WaitMaildir(t, filepath.Join(dir, "mail", "bob"), 1, 20*time.Second)
	if !strings.Contains(msgs[0], "first half\nsecond half") {
		t.Errorf("delivered message:\n%s", msgs[0])
	}
	p2.stop(t, 30*time.Second)
}

func TestHashPassword(t *testing.T) {
	cmd := exec.Command(hubdBinary, "hash-password")
	cmd.Stdin = strings.NewReader("s3cret\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(string(out))
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret")); err != nil {
		t.Fatalf("hash %q does not verify: %v", hash, err)
	}
}

func TestHashPasswordArgon2id(t *testing.T) {
	cmd := exec.Command(hubdBinary, "hash-password", "-argon2id")
	cmd.Stdin = strings.NewReader("s3cret\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(string(out))
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=65536,t=3,p=4$") {
		t.Fatalf("hash %q", hash)
	}
	if ok, err := passhash.Verify(hash, "s3cret"); !ok || err != nil {
		t.Fatalf("hash %q does not verify: %v, %v", hash, ok, err)
	}
}

// TestSecondInstanceRefused: a second hubd on the same spool exits 1 with a
// clear reason instead of delivering everything twice.
func TestSecondInstanceRefused(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname  = "one.example.test"
  spool_dir = "spool"
}
receive_connector "in" { bind = [%q] }
`, addr))
	p := startHubd(t, cfg, addr)
	out, code := runHubd(t, "run", "-config", cfg)
	if code != 1 || !strings.Contains(out, "in use by another process") {
		t.Errorf("second hubd: exit %d\n%s", code, out)
	}
	if err := p.stop(t, 30*time.Second); err != nil {
		t.Errorf("first hubd: %v", err)
	}
}
