package connectors

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"hubd/internal/logbuf"
	"hubd/policy/passhash"
)

// argonHash is a cheap Argon2id hash (64 KiB, one pass) for tests.
func argonHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := passhash.HashArgon2id(pw, passhash.Argon2Params{Memory: 64, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestAuthUserWithoutMailbox: a user block (Argon2id) authenticates over
// STARTTLS and may send as its senders only, with the reply a mailbox's
// sender check gives.
func TestAuthUserWithoutMailbox(t *testing.T) {
	t.Parallel()
	h := start(t, fmt.Sprintf(`
user "relay@example.com" {
  password_hash = %q
  senders       = ["relay@example.com", "@example.net"]
}
user "scanner" {
  password_hash = %q
  senders       = ["scanner@example.com"]
}
`, argonHash(t, "relay pw"), "{ARGON2ID}"+argonHash(t, "scan pw"))+submissionHCL)
	c := tlsSession(t, h)
	c.expect("AUTH PLAIN "+b64("\x00Relay@Example.com\x00relay pw"), "235 2.7.0 ")
	c.expect("MAIL FROM:<alice@example.com>", "550 5.7.1 Not authorized to send as <alice@example.com>")
	c.expect("MAIL FROM:<relay+news@example.com>", "250 ")
	c.expect("RSET", "250 ")
	if r := c.send("anyone@example.net", []string{"someone@remote.test"}, "Subject: s\r\n\r\nhi\r\n"); r[:3] != "250" {
		t.Fatalf("DATA: %q", r)
	}
	if env, _ := h.sub.last(t); env.AuthUser != "relay@example.com" {
		t.Errorf("AuthUser %q", env.AuthUser)
	}

	// A login that is a name, by LOGIN; a wrong password is the usual 535.
	c2 := tlsSession(t, h)
	c2.expect("AUTH PLAIN "+b64("\x00scanner\x00relay pw"), "535 5.7.8 Authentication credentials invalid")
	c2.expect("AUTH LOGIN "+b64("scanner"), "334 ")
	c2.expect(b64("scan pw"), "235 ")
	c2.expect("MAIL FROM:<relay@example.com>", "550 5.7.1 Not authorized to send as <relay@example.com>")
	c2.expect("MAIL FROM:<scanner@example.com>", "250 ")
}

// TestAuthBackendTimeout: an auth socket that accepts and never answers
// is 454 4.7.0 after the backend's timeout, and is not counted as the
// client's logon failure (max_logon_failures = 2 would close at the second).
func TestAuthBackendTimeout(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "auth-client")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // hold it open, say nothing
		}
	}()
	h := start(t, fmt.Sprintf(`
auth_backend "dovecot" {
  socket  = %q
  timeout = "200ms"
}
receive_connector "submission" {
  usage           = "client"
  bind            = ["127.0.0.1:0"]
  tarpit_interval = "0s"
  tls { self_signed = true }
  max_logon_failures = 2
  auth_backend    = "dovecot"
}
`, sock))
	c := tlsSession(t, h)
	for range 3 {
		c.expect("AUTH PLAIN "+b64("\x00carol@example.org\x00pw"), "454 4.7.0 Temporary authentication failure")
	}
	c.expect("NOOP", "250 ")
}

// dovecotAuth is Debian's Dovecot (dovecot-core) running as a child of
// the test with a private configuration in t.TempDir(): no protocols,
// only the auth service, a passwd-file passdb and an auth-client socket.
type dovecotAuth struct {
	socket string
	stop   func()
}

// startDovecotAuth starts Dovecot with the given passwd-file lines, or
// skips the test when /usr/sbin/dovecot is absent.
func startDovecotAuth(t *testing.T, passwd string) *dovecotAuth {
	t.Helper()
	const bin = "/usr/sbin/dovecot"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("/usr/sbin/dovecot is absent (apt-get install dovecot-core); .ci/run installs it")
	}
	dir := t.TempDir()
	self, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	group, err := user.LookupGroupId(self.Gid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(passwd), 0o600); err != nil {
		t.Fatal(err)
	}
	// Dovecot's internal and login processes run as the test's own user
	// (root included), so no system account is needed.
	conf := fmt.Sprintf(`# hubd test: a private Dovecot, auth service only
instance_name = hubd-auth-%[4]d
base_dir = %[1]s/run
state_dir = %[1]s/state
protocols = none
ssl = no
log_path = %[1]s/dovecot.log
default_internal_user = %[2]s
default_internal_group = %[3]s
default_login_user = %[2]s
first_valid_uid = 0
first_valid_gid = 0
auth_mechanisms = plain login
# hubd tarpits failures itself; Dovecot's own 2s delay would only slow the test.
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = %[1]s/users
}
userdb {
  driver = static
  args = uid=%[5]s gid=%[6]s home=%[1]s/home
}
service auth {
  unix_listener auth-client {
    path = %[1]s/auth-client
    mode = 0600
  }
}
`, dir, self.Username, group.Name, os.Getpid(), self.Uid, self.Gid)
	if err := os.WriteFile(filepath.Join(dir, "dovecot.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var out logbuf.Buffer
	cmd := exec.Command(bin, "-F", "-c", filepath.Join(dir, "dovecot.conf"))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	dv := &dovecotAuth{socket: filepath.Join(dir, "auth-client")}
	dv.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(func() {
		dv.stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Logf("dovecot output:\n%s\ndovecot.log:\n%s", out.String(), b)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", dv.socket); err == nil {
			c.Close()
			return dv
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("dovecot exited: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond): // poll interval
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot's auth-client socket did not appear\n%s", out.String())
		}
	}
}

// TestDovecotAuth authenticates through a real Dovecot: its passwd-file
// holds a hash `hubd hash-password` would make, behind Dovecot's
// {BLF-CRYPT} prefix. Success (senders: the login, and with
// senders_domain_match its domain), a wrong password (535 5.7.8), and
// Dovecot stopped (454 4.7.0).
func TestDovecotAuth(t *testing.T) {
	t.Parallel()
	hash, err := passhash.HashBcrypt("carol pw", passhash.MinBcryptCost)
	if err != nil {
		t.Fatal(err)
	}
	dv := startDovecotAuth(t, "carol@example.org:{BLF-CRYPT}"+hash+"\n")
	h := start(t, fmt.Sprintf(`
auth_backend "dovecot" {
  socket  = %q
  timeout = "5s"
}
receive_connector "submission" {
  usage           = "client"
  bind            = ["127.0.0.1:0"]
  tarpit_interval = "0s"
  tls { self_signed = true }
  max_logon_failures = 2
  auth_backend    = "dovecot"
}
`, dv.socket))
	c := tlsSession(t, h)
	c.expect("AUTH PLAIN "+b64("\x00carol@example.org\x00carol pw"), "235 2.7.0 ")
	c.expect("MAIL FROM:<dave@example.org>", "550 5.7.1 Not authorized to send as <dave@example.org>")
	if r := c.send("carol@example.org", []string{"someone@remote.test"}, "Subject: s\r\n\r\nhi\r\n"); r[:3] != "250" {
		t.Fatalf("DATA: %q", r)
	}
	if env, _ := h.sub.last(t); env.AuthUser != "carol@example.org" {
		t.Errorf("AuthUser %q", env.AuthUser)
	}

	// LOGIN reaches Dovecot as PLAIN; a wrong password is the local 535.
	c2 := tlsSession(t, h)
	c2.expect("AUTH LOGIN "+b64("carol@example.org"), "334 ")
	c2.expect(b64("wrong"), "535 5.7.8 Authentication credentials invalid")
	// A local mailbox's password is no good on this connector.
	c2.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "421 4.7.0 Too many authentication failures")

	dv.stop()
	c3 := tlsSession(t, h)
	c3.expect("AUTH PLAIN "+b64("\x00carol@example.org\x00carol pw"), "454 4.7.0 Temporary authentication failure")
}
