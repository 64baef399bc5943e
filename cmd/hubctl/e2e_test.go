package main

// End-to-end: hubd and hubctl built here, hubd run as a child process on a
// private config (ephemeral ports, the admin socket in t.TempDir()), a
// remote MTA (internal/smtpsink) that answers 451 to every RCPT until the
// test lets it accept, so that messages sit in a queue.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hubd/hub/ops"
	"hubd/internal/admin"
	"hubd/internal/logbuf"
	"hubd/internal/smtpsink"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hubctl-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, pkg := range []string{"hubd", "hubctl", "sendmail"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, pkg), "../"+pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
			os.Exit(1)
		}
	}
	// sendmail acts as mailq under that name, as Postfix's does.
	if err := os.Symlink("sendmail", filepath.Join(dir, "mailq")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubd is one hubd child process.
type hubd struct {
	cmd  *exec.Cmd
	out  *logbuf.Buffer
	done chan struct{}
}

func startHubd(t *testing.T, cfg, sock string) *hubd {
	t.Helper()
	return startHubdBinary(t, filepath.Join(binDir, "hubd"), cfg, sock)
}

// startHubdBinary starts the hubd binary bin on cfg and waits for its
// admin socket.
func startHubdBinary(t *testing.T, bin, cfg, sock string) *hubd {
	t.Helper()
	p := &hubd{out: &logbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "-config", cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("hubd output:\n%s", p.out.String())
		}
	})
	waitFor(t, "the admin socket", func() bool {
		select {
		case <-p.done:
			t.Fatalf("hubd exited:\n%s", p.out.String())
		default:
		}
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

func (p *hubd) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("hubd did not stop:\n%s", p.out.String())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

// ctl runs hubctl with args (stdin given) and returns stdout, stderr and
// the exit code.
type ctl struct {
	t    *testing.T
	sock string
}

func (c ctl) run(stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "hubctl"), append([]string{"-socket", c.sock}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// ok runs hubctl and fails the test unless it exits 0.
func (c ctl) ok(args ...string) string {
	c.t.Helper()
	out, errs, code := c.run("", args...)
	if code != 0 {
		c.t.Fatalf("hubctl %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

func (c ctl) json(v any, args ...string) {
	c.t.Helper()
	out := c.ok(append(args, "--json")...)
	// Decode into a fresh value: fields left out (omitempty) must not keep
	// an earlier decode's values.
	if p, ok := v.(*[]ops.QueueInfo); ok {
		*p = nil
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("hubctl %v --json: %v\n%s", args, err, out)
	}
}

func (c ctl) messages(args ...string) []ops.MessageSummary {
	var l ops.MessageList
	c.json(&l, append([]string{"message", "list"}, args...)...)
	return l.Messages
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestOperatorSession(t *testing.T) {
	dir := t.TempDir()
	var accept atomic.Bool
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(string) error {
		if accept.Load() {
			return nil
		}
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try later"}
	}})
	tcp := freePort(t)
	token := "0123456789abcdef0123456789abcdef"
	os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600)
	in, cfg, sock := relayHub(t, dir, sink.Port(), `  quick_retry_interval = "1h"`,
		fmt.Sprintf("  socket_mode = \"0600\"\n  listen      = %q\n  token_file  = \"token\"", tcp),
		`mailbox "sender@example.test" { maildir = "mail/sender" }`)
	p := startHubd(t, cfg, sock)
	c := ctl{t, sock}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	// The socket answers a moment before the line announcing it is written.
	waitFor(t, "the listening log naming the admin socket", func() bool {
		return strings.Contains(p.out.String(), "admin_socket="+sock)
	})

	for i := range 3 {
		msg := fmt.Sprintf("Subject: test %d\r\nMessage-ID: <m%d@example.test>\r\n\r\nbody %d\r\n", i, i, i)
		if err := smtp.SendMail(in, nil, "sender@example.test", []string{fmt.Sprintf("r%d@remote.test", i)}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three deferred messages", func() bool { return len(c.messages("--state", "deferred")) == 3 })
	msgs := c.messages()
	ids := []string{msgs[0].ID, msgs[1].ID, msgs[2].ID}
	queue := fmt.Sprintf("smtp:out[[127.0.0.1]:%d]", sink.Port())

	// queue list
	var qs []ops.QueueInfo
	c.json(&qs, "queue", "list")
	if qs[0].Name != queue || qs[0].Messages != 3 || qs[0].Recipients != 3 || !strings.Contains(qs[0].LastError, "451 4.7.1") ||
		qs[0].NextRetry.IsZero() || qs[len(qs)-1].Name != "poison" {
		t.Fatalf("queue list: %+v", qs)
	}
	table := c.ok("queue", "list")
	t.Logf("$ hubctl queue list\n%s", table)
	if !strings.Contains(table, queue) || !strings.Contains(table, "NEXT RETRY") {
		t.Errorf("table:\n%s", table)
	}

	// message list, filters, -q
	t.Logf("$ hubctl message list\n%s", c.ok("message", "list"))
	if got := c.messages("--to", "r1@remote.test"); len(got) != 1 || got[0].ID != ids[1] {
		t.Errorf("--to: %+v", got)
	}
	if got := c.messages("--queue", queue, "--from", "sender@example.test"); len(got) != 3 {
		t.Errorf("--queue --from: %d", len(got))
	}
	if got := c.messages("--older-than", "1h"); len(got) != 0 {
		t.Errorf("--older-than 1h: %d", len(got))
	}
	if q := c.ok("message", "list", "-q"); q != strings.Join(ids, "\n")+"\n" {
		t.Errorf("-q: %q", q)
	}
	// Paging: a truncated listing names the command for the next page,
	// which lists the rest; a bare id is a position too.
	out, errs, code := c.run("", "message", "list", "-q", "--limit", "2", "--queue", queue)
	if code != 0 || out != ids[0]+"\n"+ids[1]+"\n" {
		t.Fatalf("first page: %d %q %q", code, out, errs)
	}
	t.Logf("$ hubctl message list -q --limit 2 --queue %s\n%s%s", queue, out, errs)
	_, cmdline, found := strings.Cut(strings.TrimSpace(errs), "the next page: hubctl ")
	if !found || !strings.Contains(errs, "hubctl: listing truncated at 2 messages; ") ||
		!strings.Contains(cmdline, "--queue '"+queue+"'") || !strings.Contains(cmdline, "--after "+ids[1]+"@") {
		t.Fatalf("next page hint: %q", errs)
	}
	var next []string // the hint's arguments, unquoted as a shell would
	for _, a := range strings.Fields(cmdline) {
		next = append(next, strings.Trim(a, "'"))
	}
	if out, errs, code := c.run("", next...); code != 0 || out != ids[2]+"\n" || errs != "" {
		t.Errorf("next page (%v): %d %q %q", next, code, out, errs)
	}
	if got := c.messages("--after", ids[0]); len(got) != 2 || got[0].ID != ids[1] {
		t.Errorf("--after %s: %+v", ids[0], got)
	}
	var page ops.MessageList
	c.json(&page, "message", "list", "--limit", "1")
	if !page.Truncated || page.Next != ops.PositionOf(page.Messages[0]).String() {
		t.Errorf("--json page: %+v", page)
	}
	if _, errs, code := c.run("", "message", "list", "--after", "x@yesterday"); code == 0 || !strings.Contains(errs, `bad after "x@yesterday"`) {
		t.Errorf("bad --after: %d %q", code, errs)
	}

	// message show, export
	var d ops.MessageDetail
	c.json(&d, "message", "show", ids[0])
	if d.Envelope.From != "sender@example.test" || d.MessageID != "<m0@example.test>" || len(d.Recipients) != 1 ||
		len(d.Recipients[0].Attempts) == 0 || !strings.Contains(d.Recipients[0].Attempts[0].Reply, "451 4.7.1") {
		t.Errorf("show: %+v", d)
	}
	t.Logf("$ hubctl message show %s\n%s", ids[0], c.ok("message", "show", ids[0]))
	if raw := c.ok("message", "export", ids[0]); !strings.Contains(raw, "Subject: test 0\r\n") || !strings.HasSuffix(raw, "body 0\r\n") {
		t.Errorf("export: %q", raw)
	}

	// hold (ids from stdin), suspend
	out, errs, code = c.run(ids[0]+"\n", "message", "hold", "-")
	t.Logf("$ echo %s | hubctl message hold -\n%s%s", ids[0], out, errs)
	if code != 0 || out != ids[0]+": held\n" {
		t.Fatalf("hold: %d %q %q", code, out, errs)
	}
	c.ok("queue", "suspend", queue)
	c.json(&qs, "queue", "list")
	if qs[0].State != "Suspended" || qs[0].Override != "suspended (runtime override)" {
		t.Errorf("suspended queue: %+v", qs[0])
	}

	// Restart: the hold stays, the suspension is gone.
	p.stop(t)
	p = startHubd(t, cfg, sock)
	if got := c.messages("--state", "held"); len(got) != 1 || got[0].ID != ids[0] {
		t.Fatalf("after restart, held: %+v", got)
	}
	c.json(&qs, "queue", "list")
	if qs[0].Override != "" {
		t.Errorf("suspension survived a restart: %+v", qs[0])
	}

	// delete --ndr: the sender gets a DSN (a local mailbox here).
	out = c.ok("message", "delete", ids[1], "--ndr")
	t.Logf("$ hubctl message delete %s --ndr\n%s", ids[1], out)
	waitFor(t, "the DSN in the sender's mailbox", func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "mail", "sender", "new", "*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			if bytes.Contains(b, []byte("Status: 5.3.0")) && bytes.Contains(b, []byte("r1@remote.test")) {
				return true
			}
		}
		return false
	})

	// The remote accepts now: queue retry delivers the third at once; the
	// held one waits for its release.
	accept.Store(true)
	var res admin.ActionResult
	c.json(&res, "queue", "retry", queue)
	if !res.OK || res.Count != 1 {
		t.Errorf("queue retry: %+v", res)
	}
	sink.WaitFor(t, 1, 20*time.Second)
	out = c.ok("message", "release", ids[0])
	t.Logf("$ hubctl message release %s\n%s", ids[0], out)
	msgsIn := sink.WaitFor(t, 2, 20*time.Second)
	if !strings.Contains(msgsIn[1].String(), "r0@remote.test") {
		t.Errorf("released message not delivered: %v", msgsIn)
	}
	waitFor(t, "an empty queue", func() bool { return len(c.messages()) == 0 })
	if len(sink.Messages()) != 2 {
		t.Errorf("deleted message delivered: %v", sink.Messages())
	}

	// Failures and exit codes.
	if out, errs, code := c.run("", "message", "hold", "NOSUCHID", "--json"); code != 1 || !strings.Contains(errs, "NOSUCHID") ||
		!strings.Contains(out, `"ok": false`) {
		t.Errorf("hold of an unknown id: %d %q %q", code, out, errs)
	}
	if _, errs, code := c.run("", "message", "show", "NOSUCHID"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("show of an unknown id: %d %q", code, errs)
	}
	if _, errs, code := c.run("", "message", "list", "--state", "lost"); code != 1 || !strings.Contains(errs, `bad state "lost"`) {
		t.Errorf("bad state: %d %q", code, errs)
	}
	if _, _, code := c.run("", "queue", "frobnicate"); code != 64 {
		t.Errorf("usage: exit %d", code)
	}
	if _, errs, code := (ctl{t, filepath.Join(dir, "nope.sock")}).run("", "queue", "list"); code != 69 || !strings.Contains(errs, "nope.sock") {
		t.Errorf("unreachable: %d %q", code, errs)
	}

	// TCP: 401 without the token; hubctl -url with -token-file works.
	resp, err := http.Get("http://" + tcp + "/v1/queues")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("TCP without token: %s", resp.Status)
	}
	cmd := exec.Command(filepath.Join(binDir, "hubctl"), "-url", "http://"+tcp, "-token-file", filepath.Join(dir, "token"), "queue", "list")
	if b, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(b), "poison") {
		t.Errorf("hubctl over TCP: %v\n%s", err, b)
	}

	// A second hubd on the same socket refuses to start; the socket stays.
	p.stop(t)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after a clean stop: %v", err)
	}
}

// relayHub writes dir/hubd.hcl: connector "in" on a free port relays
// 127.0.0.1's mail to the sink on sinkPort ("out", no TLS); the admin API
// is on dir/admin.sock. hubExtra goes into the hub block, adminExtra into
// the admin block, more at the end. It returns the connector's address,
// the config file and the socket.
func relayHub(t *testing.T, dir string, sinkPort int, hubExtra, adminExtra, more string) (in, cfg, sock string) {
	t.Helper()
	in = freePort(t)
	sock = filepath.Join(dir, "admin.sock")
	cfg = filepath.Join(dir, "hubd.hcl")
	src := fmt.Sprintf(`
hub {
  hostname  = "hub.example.test"
  spool_dir = "spool"
%s
}
admin {
  socket = "admin.sock"
%s
}
accepted_domain "example.test" {}
receive_connector "in" {
  bind             = [%q]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = ["[127.0.0.1]:%d"]
  tls            = "none"
}
%s`, hubExtra, adminExtra, in, sinkPort, more)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return in, cfg, sock
}
