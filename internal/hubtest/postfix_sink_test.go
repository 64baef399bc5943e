package hubtest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/internal/logbuf"
	"hubd/internal/mimetest"
)

// postfixSink is Postfix's smtp-sink (package postfix) as a next hop,
// started by the test on a loopback port with -8 (no 8BITMIME) and -d
// (each message dumped to a file in dir).
type postfixSink struct {
	addr string
	dir  string
}

// startPostfixSink starts smtp-sink with args (besides -d), or skips the
// test when it is not installed. The kernel picks a free port, which is
// handed to smtp-sink; if another process takes it first, a new one is
// tried.
func startPostfixSink(t *testing.T, args ...string) *postfixSink {
	t.Helper()
	bin, err := lookSbin("smtp-sink")
	if err != nil {
		t.Skip("smtp-sink is not installed (apt-get install postfix, \"No configuration\"); .ci/run installs it")
	}
	dir := t.TempDir()
	dump := filepath.Join(dir, "dump")
	if err := os.Mkdir(dump, 0o777); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// smtp-sink refuses to run as root without -u; the user must be
		// able to write the dump directory.
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Skipf("running as root, and no user nobody for smtp-sink: %v", err)
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		for _, d := range []string{filepath.Dir(dir), dir} {
			os.Chmod(d, 0o711)
		}
		os.Chown(dump, uid, -1)
		args = append(args, "-u", "nobody")
	}
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		var out logbuf.Buffer
		cmd := exec.Command(bin, append(args, "-d", dump+"/%Y%m%d%H%M%S.", addr, "64")...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if waitListening(addr, exited) {
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				<-exited
			})
			return &postfixSink{addr: addr, dir: dump}
		}
		cmd.Process.Kill()
		t.Logf("smtp-sink on %s did not start (%s); trying another port", addr, strings.TrimSpace(out.String()))
	}
	t.Fatal("smtp-sink would not start")
	return nil
}

// waitListening polls until addr accepts a connection, or the process
// exits.
func waitListening(addr string, exited chan error) bool {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			// smtp-sink greets and waits; a connection that says nothing
			// costs it nothing.
			c.Close()
			return true
		}
		select {
		case err := <-exited:
			exited <- err
			return false
		case <-tick.C:
		}
	}
	return false
}

// sunk is one message smtp-sink dumped.
type sunk struct {
	mailArgs string // X-Mail-Args: the MAIL FROM arguments, BODY= included
	data     string // the message, CRLF line endings, as the client sent it
}

// messages reads the dumps: smtp-sink's own header lines up to and
// including its three-line Received:, then the message with LF line
// endings, then an empty line.
func (s *postfixSink) messages(t *testing.T) []sunk {
	t.Helper()
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []sunk
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var m sunk
		lines := strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n")
		i := 0
		for ; i < len(lines) && !strings.HasPrefix(lines[i], "Received: "); i++ {
			if v, ok := strings.CutPrefix(lines[i], "X-Mail-Args: "); ok {
				m.mailArgs = v
			}
		}
		for i++; i < len(lines) && (strings.HasPrefix(lines[i], "\t") || strings.HasPrefix(lines[i], " ")); i++ {
		}
		if i > len(lines) {
			t.Fatalf("dump %s: no message", e.Name())
		}
		m.data = strings.Join(lines[i:], "\r\n") + "\r\n"
		out = append(out, m)
	}
	return out
}

// pythonParts decodes a message with Python's email package, as a second
// opinion on the MIME: its leaf parts as mimetest.Leaves gives them, or nil
// when python3 is not installed.
func pythonParts(t *testing.T, msg string) []string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil
	}
	const script = `
import sys, email
m = email.message_from_bytes(sys.stdin.buffer.read())
for p in m.walk():
    if not p.is_multipart():
        print(p.get_content_type(), (p.get_payload(decode=True) or b"").hex())
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	var parts []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		typ, hexed, _ := strings.Cut(line, " ")
		b, err := hex.DecodeString(hexed)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, typ+": "+string(b))
	}
	return parts
}

const sinkHub = `
hub {
  hostname                 = "hub.example.test"
  spool_dir                = "{{dir}}/spool"
  quick_retry_interval     = "200ms"
}
accepted_domain "example.test" {}
mailbox "sender@example.test" { maildir = "{{dir}}/mail/sender" }
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "sink" {
  address_spaces = ["remote.test"]
  smart_hosts    = ["%s"]
  tls            = "none"
}
`

// An 8-bit message with a long line, in every shape: text parts, an
// attachment, a message without MIME.
var eightBitMessages = []string{
	"From: <sender@example.test>\r\nTo: <a@remote.test>\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\nThis is MIME.\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \r\n= sign, tab\tand trailing tab\t\r\n" + strings.Repeat("lang ", 300) + "\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=x.bin\r\n\r\n" +
		"\x00\x01\x02\xff\xfe\x80 binary\r\nmore \xe9\r\n" +
		"--b1--\r\n",
	"From: <sender@example.test>\r\nTo: <a@remote.test>\r\nSubject: latin-1, not MIME\r\n\r\n" +
		"Caf\xe9 cr\xe8me br\xfbl\xe9e\r\n-- \r\nsignature\r\n",
}

// TestPostfixSinkWithout8BITMIME relays 8-bit mail through the hub to
// Postfix's smtp-sink -8, a next hop without 8BITMIME (RFC 6152 §3): each
// message arrives converted (7-bit, no BODY=8BITMIME, no line over 998
// octets) and decodes, with Go's MIME reader, to the original octets; a
// multipart/signed 8-bit message is not converted but fails with 5.6.3
// and its sender gets a DSN.
func TestPostfixSinkWithout8BITMIME(t *testing.T) {
	sink := startPostfixSink(t, "-8")
	h := Start(t, fmt.Sprintf(sinkHub, sink.addr), Options{})
	addr := h.Addr(t, "apps")
	for _, msg := range eightBitMessages {
		if err := smtp.SendMail(addr, nil, "sender@example.test", []string{"a@remote.test"}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	signed := "From: <sender@example.test>\r\nTo: <a@remote.test>\r\nSubject: signed\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=\"s1\"\r\n\r\n" +
		"--s1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n" +
		"--s1\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nx\r\n-----END PGP SIGNATURE-----\r\n--s1--\r\n"
	if err := smtp.SendMail(addr, nil, "sender@example.test", []string{"b@remote.test"}, []byte(signed)); err != nil {
		t.Fatal(err)
	}
	dsns := WaitMaildir(t, h.Dir+"/mail/sender", 1, 20*time.Second)
	if err := h.Transport.WaitIdle(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}

	got := sink.messages(t)
	if len(got) != len(eightBitMessages) {
		t.Fatalf("smtp-sink got %d messages, want %d", len(got), len(eightBitMessages))
	}
	for _, m := range got {
		if strings.Contains(m.mailArgs, "BODY=8BITMIME") {
			t.Errorf("MAIL FROM:%s to a server without 8BITMIME", m.mailArgs)
		}
		for i, line := range strings.Split(m.data, "\r\n") {
			if len(line) > 998 {
				t.Errorf("line %d has %d octets", i+1, len(line))
			}
			if strings.ContainsFunc(line, func(r rune) bool { return r >= 0x80 }) {
				t.Errorf("8-bit line %d: %q", i+1, line)
			}
		}
		_, subject, _ := strings.Cut(m.data, "Subject: ")
		subject, _, _ = strings.Cut(subject, "\r\n")
		var orig string
		for _, o := range eightBitMessages {
			if strings.Contains(o, "Subject: "+subject+"\r\n") {
				orig = o
			}
		}
		want, have := mimetest.Leaves(t, orig), mimetest.Leaves(t, m.data)
		if fmt.Sprintf("%q", want) != fmt.Sprintf("%q", have) {
			t.Errorf("%q decodes to\n%q\nwant\n%q\nsent:\n%s", subject, have, want, m.data)
		}
		if py := pythonParts(t, m.data); py != nil && fmt.Sprintf("%q", want) != fmt.Sprintf("%q", py) {
			t.Errorf("%q decodes with Python's email package to\n%q\nwant\n%q", subject, py, want)
		}
	}

	dsn := dsns[0]
	for _, want := range []string{"Status: 5.6.3", "multipart/signed", "lacks 8BITMIME", "b@remote.test"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if bytes.Contains([]byte(fmt.Sprint(got)), []byte("Subject: signed")) {
		t.Error("the signed message was sent")
	}
}
