package hubtest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hubd/internal/logbuf"
)

// dovecot is Debian's Dovecot (dovecot-core, dovecot-lmtpd) running as a
// child process of the test with a private configuration under
// t.TempDir(): its own base_dir and state_dir, a passwd-file userdb, Maildirs
// with subaddress folders (lmtp_save_to_detail_mailbox), and an LMTP unix
// socket. Nothing of the system's Dovecot is used or touched.
//
// Dovecot refuses to store mail as root, so when the test runs as root the
// mail is stored as "nobody" (the lmtp service drops to mail_uid) in
// directories made traversable for it; otherwise as the test's own user.
type dovecot struct {
	dir    string // the private root
	socket string // Dovecot's LMTP socket
	log    string // its log file
	probes int    // connections startDovecot made to see it ready
}

// startDovecot starts Dovecot with a user per name (alice → alice@<any
// domain>, whose Maildir is <dir>/mail/alice), or skips the test when it is
// not installed. It is stopped at the end of the test.
func startDovecot(t *testing.T, users ...string) *dovecot {
	t.Helper()
	bin, err := lookSbin("dovecot")
	if err != nil {
		t.Skip("dovecot is not installed (apt-get install dovecot-lmtpd); .ci/run installs it")
	}
	dir := t.TempDir()
	dv := &dovecot{dir: dir, socket: filepath.Join(dir, "lmtp.sock"), log: filepath.Join(dir, "dovecot.log")}
	self, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	internal, mailUID, mailGID := self.Username, self.Uid, self.Gid
	if os.Geteuid() == 0 {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Skipf("running as root, and no user nobody to store mail as: %v", err)
		}
		mailUID, mailGID = nobody.Uid, nobody.Gid
		// The mail user must reach <dir>/mail: t.TempDir() and its parent
		// are 0700.
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	mail := filepath.Join(dir, "mail")
	if err := os.Mkdir(mail, 0o700); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(mailUID)
	gid, _ := strconv.Atoi(mailGID)
	if err := os.Chown(mail, uid, gid); err != nil {
		t.Fatal(err)
	}
	var passwd strings.Builder
	for _, u := range users {
		fmt.Fprintf(&passwd, "%s:{PLAIN}unused::::%s/%s::\n", u, mail, u)
	}
	write(t, filepath.Join(dir, "users"), passwd.String())
	write(t, filepath.Join(dir, "dovecot.conf"), fmt.Sprintf(`# hubd test: a private Dovecot, LMTP only
instance_name = hubtest-%[5]d
base_dir = %[1]s/run
state_dir = %[1]s/state
protocols = lmtp
ssl = no
log_path = %[1]s/dovecot.log
default_internal_user = %[2]s
default_internal_group = %[2]s
default_login_user = %[2]s
first_valid_uid = 0
first_valid_gid = 0
mail_uid = %[3]s
mail_gid = %[4]s
mail_location = maildir:~/
recipient_delimiter = +
lmtp_save_to_detail_mailbox = yes
lda_mailbox_autocreate = yes
userdb {
  driver = passwd-file
  args = username_format=%%n %[1]s/users
}
passdb {
  driver = passwd-file
  args = username_format=%%n %[1]s/users
}
service lmtp {
  unix_listener lmtp {
    path = %[1]s/lmtp.sock
    mode = 0666
  }
}
`, dir, groupOf(t, internal), mailUID, mailGID, os.Getpid()))

	var out logbuf.Buffer
	cmd := exec.Command(bin, "-F", "-c", filepath.Join(dir, "dovecot.conf"))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(dv.log)
			t.Logf("dovecot output:\n%s\ndovecot.log:\n%s", out.String(), b)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := net.Dial("unix", dv.socket); err == nil {
			c.Close()
			dv.probes++
			return dv
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(dv.log)
			t.Fatalf("dovecot exited: %v\n%s\n%s", err, out.String(), b)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot's LMTP socket did not appear\n%s", out.String())
		}
	}
}

// lookSbin finds a program in PATH or in /usr/sbin, which a user's PATH
// often lacks.
func lookSbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return exec.LookPath(filepath.Join("/usr/sbin", name))
}

// groupOf is the name of u's primary group ("root" for root).
func groupOf(t *testing.T, name string) string {
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	return g.Name
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// folder returns the messages in a user's Maildir folder ("" for INBOX),
// in new/ and cur/.
func (dv *dovecot) folder(t *testing.T, usr, folder string) []string {
	t.Helper()
	dir := filepath.Join(dv.dir, "mail", usr)
	if folder != "" {
		dir = filepath.Join(dir, "."+folder)
	}
	var msgs []string
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, string(b))
		}
	}
	return msgs
}

// connects counts the LMTP sessions in Dovecot's log, except
// startDovecot's own.
func (dv *dovecot) connects(t *testing.T) int {
	b, err := os.ReadFile(dv.log)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte(": Connect from local")) - dv.probes
}

// countingProxy is a unix socket in front of Dovecot's that counts the
// connections made to it: the hub's LMTP deliverer talks to it.
type countingProxy struct {
	path  string
	mu    sync.Mutex
	conns int
}

func startCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	p := &countingProxy{path: filepath.Join(t.TempDir(), "proxy.sock")}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns++
			p.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.Dial("unix", target)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() { io.Copy(up, c); up.(*net.UnixConn).CloseWrite(); close(done) }()
				io.Copy(c, up)
				c.(*net.UnixConn).CloseWrite()
				<-done
			}()
		}
	}()
	return p
}

func (p *countingProxy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}
