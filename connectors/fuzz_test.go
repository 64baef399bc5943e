package connectors

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/internal/logbuf"
	"hubd/policy"
)

// FuzzSession feeds arbitrary bytes after EHLO to a real receive connector
// over loopback: the command filter, go-smtp, the session and the DATA
// pipeline all parse them. Whatever arrives, nothing panics and every line
// the server sends is a well-formed reply (three digits, then space or
// hyphen).
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
		"VRFY alice\r\nEXPN list\r\nHELP\r\nNOOP\r\nRSET\r\n",
		"MAIL FROM:<\x00@x>\r\n", "MAIL FROM:<ü@x> SMTPUTF8\r\nRCPT TO:<alice@example.com>\r\n",
		"AUTH PLAIN\r\n=\r\n", "AUTH LOGIN\r\nYQ==\r\n*\r\n", "STARTTLS\r\nRSET\r\n",
		"BDAT 5\r\nhelloBDAT 0 LAST\r\n", "BDAT 99999999999999999999\r\n",
		"MAIL FROM:<a@x>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n\n.\n\r\n.\r\n",
		strings.Repeat("A", 3000) + "\r\n", "EHLO a_b\r\nHELO [1.2.3]\r\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	src := `
hub {
  hostname  = "mx.test"
  spool_dir = "` + filepath.Join(dir, "spool") + `"
}
accepted_domain "example.com" {}
mailbox "alice@example.com" {}
distribution_list "list@example.com" { members = ["alice@example.com"] }
receive_connector "internet" {
  bind            = ["127.0.0.1:0"]
  tarpit_interval = "0s"
  allow_vrfy      = true
  allow_expn      = true
  tls { self_signed = true }
  max_inbound_connections_per_source = 1000
}
`
	cfg, err := policy.LoadBytes(filepath.Join(dir, "hubd.hcl"), []byte(src), dir)
	if err != nil {
		f.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	svc, err := New(Options{Config: cfg, Submitter: &capture{}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		f.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
	})
	addr := svc.Addrs()["127.0.0.1:0"].String()
	f.Fuzz(func(t *testing.T, data []byte) {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Skip("dial:", err) // the machine, not the input
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		go func() {
			conn.Write([]byte("EHLO fuzz.test\r\n"))
			conn.Write(data)
			conn.Write([]byte("\r\nQUIT\r\n"))
		}()
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if line != "" && !validReplyLine(line) {
				t.Fatalf("malformed reply line %q", line)
			}
			if err != nil {
				break // EOF, or the deadline (e.g. the input left DATA open)
			}
		}
		if logs.Count("panic") > 0 {
			t.Fatalf("a panic was logged:\n%s", logs.String())
		}
	})
}

func validReplyLine(s string) bool {
	if len(s) < 4 || !strings.HasSuffix(s, "\r\n") && !strings.HasSuffix(s, "\n") {
		return len(s) >= 3 && s[0] >= '2' && s[0] <= '5' // a reply cut by the deadline
	}
	return s[0] >= '2' && s[0] <= '5' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' && (s[3] == ' ' || s[3] == '-' || s[3] == '\r')
}

// FuzzProxyHeader: a PROXY header (v1 or v2), whatever its bytes, is read
// without panicking, and an address it yields is valid.
func FuzzProxyHeader(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 192.0.2.1 192.0.2.2 5555 25\r\nEHLO x\r\n",
		"PROXY TCP6 2001:db8::1 2001:db8::2 5555 25\r\n", "PROXY UNKNOWN\r\n", "PROXY TCP4 1.2.3.4\r\n",
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc0\x00\x02\x02\x15\xb3\x00\x19",
		"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", "EHLO no proxy\r\n",
	} {
		f.Add([]byte(s))
	}
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, data []byte) {
		c1, c2 := net.Pipe()
		defer c1.Close()
		go func() {
			c2.Write(data)
			c2.Close()
		}()
		conn, client, err := readProxyHeader(c1, peer)
		if err != nil {
			return
		}
		if !client.Addr().IsValid() {
			t.Fatalf("invalid client address from %q", data)
		}
		io.Copy(io.Discard, conn)
	})
}
