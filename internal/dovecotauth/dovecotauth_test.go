package dovecotauth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeDovecot serves one scripted exchange per connection on a unix
// socket: it sends handshake, reads the client's lines up to AUTH, records
// them, and answers reply(authLine).
type fakeDovecot struct {
	path string
	got  chan []string
}

func startFake(t *testing.T, handshake string, reply func(auth string) string) *fakeDovecot {
	t.Helper()
	f := &fakeDovecot{path: filepath.Join(t.TempDir(), "auth-client"), got: make(chan []string, 10)}
	l, err := net.Listen("unix", f.path)
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
			go func() {
				defer c.Close()
				c.Write([]byte(handshake))
				br := bufio.NewReader(c)
				var lines []string
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						f.got <- lines
						return
					}
					lines = append(lines, strings.TrimSuffix(line, "\n"))
					if strings.HasPrefix(line, "AUTH\t") {
						f.got <- lines
						if r := reply(line); r != "" {
							c.Write([]byte(r))
						} else {
							br.ReadString('\n') // hang until the client gives up
						}
						return
					}
				}
			}()
		}
	}()
	return f
}

const goodHandshake = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t7\nCOOKIE\tabc\nDONE\n"

func TestAuthenticateOK(t *testing.T) {
	f := startFake(t, goodHandshake, func(auth string) string {
		if strings.Contains(auth, "resp="+base64.StdEncoding.EncodeToString([]byte("\x00carol@example.org\x00pw"))) {
			return "OK\t1\tuser=carol\x01t@example.org\n"
		}
		return "FAIL\t1\tuser=carol@example.org\n"
	})
	c := &Client{Socket: f.path, Timeout: 5 * time.Second}
	user, err := c.Authenticate(context.Background(), Request{Login: "carol@example.org", Password: "pw", Secured: true,
		LocalIP: netip.MustParseAddr("192.0.2.1"), RemoteIP: netip.MustParseAddr("::ffff:198.51.100.7")})
	if err != nil || user != "carol\t@example.org" {
		t.Fatalf("Authenticate = %q, %v", user, err)
	}
	lines := <-f.got
	if len(lines) != 3 || lines[0] != "VERSION\t1\t2" || !strings.HasPrefix(lines[1], "CPID\t") {
		t.Fatalf("client sent %q", lines)
	}
	for _, want := range []string{"AUTH\t1\tPLAIN\tservice=smtp\tnologin\tno-penalty\tsecured\t", "\tlip=192.0.2.1\t", "\trip=198.51.100.7\t"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("AUTH line %q lacks %q", lines[2], want)
		}
	}
	if _, err := c.Authenticate(context.Background(), Request{Login: "carol@example.org", Password: "wrong"}); !errors.Is(err, ErrRefused) {
		t.Errorf("wrong password: %v", err)
	}
}

func TestAuthenticateUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name, handshake, reply, want string
	}{
		{"temp fail", goodHandshake, "FAIL\t1\ttemp\treason=passdb down\n", "passdb down"},
		{"old major", "VERSION\t2\t0\nMECH\tPLAIN\nDONE\n", "", "unsupported protocol"},
		{"no plain", "VERSION\t1\t2\nMECH\tLOGIN\nDONE\n", "", "does not offer PLAIN"},
		{"wrong id", goodHandshake, "OK\t2\tuser=x\n", "unexpected reply"},
		{"cont", goodHandshake, "CONT\t1\t\n", "unexpected CONT"},
		{"timeout", goodHandshake, "", "i/o timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.handshake, func(string) string { return tc.reply })
			c := &Client{Socket: f.path, Timeout: 300 * time.Millisecond}
			_, err := c.Authenticate(context.Background(), Request{Login: "a", Password: "b"})
			var ue *UnavailableError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want an UnavailableError with %q", err, tc.want)
			}
		})
	}
	c := &Client{Socket: filepath.Join(t.TempDir(), "none")}
	var ue *UnavailableError
	if _, err := c.Authenticate(context.Background(), Request{Login: "a", Password: "b"}); !errors.As(err, &ue) {
		t.Errorf("no socket: %v", err)
	}
}

func TestNULNeverSent(t *testing.T) {
	c := &Client{Socket: "/nonexistent"}
	if _, err := c.Authenticate(context.Background(), Request{Login: "a\x00b", Password: "c"}); !errors.Is(err, ErrRefused) {
		t.Errorf("err = %v", err)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"plain": "plain", "a\x01tb": "a\tb", "\x010\x011\x01r\x01n\x01l": "\x00\x01\r\n\n", "x\x01": "x", "\x01z": "z",
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
		if in == "plain" || in == "a\x01tb" {
			if got := escape(want); got != in {
				t.Errorf("escape(%q) = %q", want, got)
			}
		}
	}
}
