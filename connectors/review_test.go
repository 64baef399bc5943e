package connectors

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// openAfter reports whether the server still holds conn open: a read that
// times out after d means nobody closed it.
func openAfter(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	for {
		_, err := conn.Read(b[:])
		if err == nil {
			continue // a reply (421 ...) may come first
		}
		return errors.Is(err, os.ErrDeadlineExceeded)
	}
}

// TestReviewShutdownClosesStalledData: a client that stalls in the middle
// of DATA may hold Shutdown up only until ctx is done; then its connection
// must be closed (go-smtp's Server.Close is a no-op after Shutdown, so
// nothing did, and the session lived on past Shutdown).
func TestReviewShutdownClosesStalledData(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO busy.test", "250")
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	c.expect("DATA", "354")
	c.raw("Subject: stalled\r\n\r\n")
	eventually(t, "the message to be in DATA", func() bool {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		for sc := range h.svc.conns {
			if sc.inData.Load() {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.svc.Shutdown(ctx); err == nil {
		t.Error("Shutdown: no error although a session outlived ctx")
	}
	if openAfter(c.conn, 3*time.Second) {
		t.Error("the stalled session is still open after Shutdown returned")
	}
	if n := h.sub.count(); n != 0 {
		t.Errorf("%d messages submitted", n)
	}
}

// TestReviewShutdownDuringImplicitTLSHandshake: a client that connects to
// an implicit-TLS port and never sends a ClientHello must not hold
// Shutdown beyond its ctx (the handshake ran in the routing goroutine
// Shutdown waits for, bounded only by the inactivity timeout).
func TestReviewShutdownDuringImplicitTLSHandshake(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "smtps" {
  bind = ["127.0.0.1:0"]
  tls {
    mode        = "implicit"
    self_signed = true
  }
}
`)
	conn, err := net.Dial("tcp", h.addr("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	eventually(t, "the handshake to start", func() bool {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		return h.svc.counts["smtps"] != nil && h.svc.counts["smtps"].total == 1
	})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		done <- h.svc.Shutdown(ctx)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown is held up by a client stalled in the TLS handshake")
	}
	if openAfter(conn, 2*time.Second) {
		t.Error("the stalled handshake is still open after Shutdown")
	}
}
