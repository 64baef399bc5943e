// Package sdnotifytest is the service manager's end of sd_notify(3) for
// tests: a real AF_UNIX datagram socket that collects what a process sends
// to $NOTIFY_SOCKET, one Message per datagram.
package sdnotifytest

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Message is one datagram: its VAR=value assignments, and the raw text.
type Message struct {
	Fields map[string]string
	Raw    string
}

// Socket receives notifications until the test ends.
type Socket struct {
	Addr     string // for NOTIFY_SOCKET: a path, or "@name" for an abstract socket
	messages chan Message
}

// Listen opens a socket at a path in a temporary directory.
func Listen(t testing.TB) *Socket {
	t.Helper()
	return listen(t, filepath.Join(t.TempDir(), "notify.sock"))
}

// ListenAbstract opens a socket in the abstract namespace (Linux), as
// systemd's own NOTIFY_SOCKET can be.
func ListenAbstract(t testing.TB, name string) *Socket {
	t.Helper()
	return listen(t, "@"+name)
}

func listen(t testing.TB, addr string) *Socket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{Addr: addr, messages: make(chan Message, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			s.messages <- parse(string(buf[:n]))
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

// parse splits a datagram into its assignments.
func parse(raw string) Message {
	m := Message{Fields: map[string]string{}, Raw: raw}
	for _, line := range strings.Split(raw, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m.Fields[k] = v
		}
	}
	return m
}

// Next returns the next datagram, failing the test if none comes within
// timeout.
func (s *Socket) Next(t testing.TB, timeout time.Duration) Message {
	t.Helper()
	select {
	case m := <-s.messages:
		return m
	case <-time.After(timeout):
		t.Fatalf("no notification on %s within %v", s.Addr, timeout)
		return Message{}
	}
}

// WaitFor returns the first datagram that has field set (to any value),
// failing the test if none comes within timeout; the datagrams before it are
// returned too, in order, for assertions on what came first.
func (s *Socket) WaitFor(t testing.TB, field string, timeout time.Duration) (Message, []Message) {
	t.Helper()
	deadline := time.After(timeout)
	var before []Message
	for {
		select {
		case m := <-s.messages:
			if _, ok := m.Fields[field]; ok {
				return m, before
			}
			before = append(before, m)
		case <-deadline:
			t.Fatalf("no notification with %s on %s within %v (got %v)", field, s.Addr, timeout, before)
			return Message{}, nil
		}
	}
}

// Pending returns the datagrams received and not yet read, without waiting.
func (s *Socket) Pending() []Message {
	var out []Message
	for {
		select {
		case m := <-s.messages:
			out = append(out, m)
		default:
			return out
		}
	}
}
