package connectors

// Reply batching (conn.go, RFC 2920 §3.1): the replies to a pipelined
// group of commands go out in one socket write, and no reply is held back
// while the server waits for anything: the client, a tarpit, the queue.

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
	"hubd/policy"
)

// session is the one client connection the Service serves now.
func (h *harness) session() *sessionConn {
	h.t.Helper()
	h.svc.mu.Lock()
	defer h.svc.mu.Unlock()
	if len(h.svc.conns) != 1 {
		h.t.Fatalf("%d sessions, want 1", len(h.svc.conns))
	}
	for sc := range h.svc.conns {
		return sc
	}
	return nil
}

// replies reads n replies and checks that each starts with its prefix.
func (c *client) replies(want ...string) {
	c.t.Helper()
	for i, w := range want {
		if r := c.reply(); !strings.HasPrefix(r, w) {
			c.t.Fatalf("reply %d: got %q, want %q", i+1, r, w)
		}
	}
}

// TestPipelinedRepliesOneWrite: a group of commands sent in one write is
// answered in one write, every reply in order and whole (the EHLO reply's
// lines included), and a group that ends with QUIT gets its replies before
// the connection closes.
func TestPipelinedRepliesOneWrite(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	sc := h.session()
	before := sc.writes.Load() // the greeting

	c.raw("EHLO client.test\r\nMAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.com>\r\n" +
		"RCPT TO:<bob@example.com>\r\nDATA\r\n")
	ehlo := c.reply()
	if !strings.HasPrefix(ehlo, "250-mx.test Hello client.test\n") || !strings.Contains(ehlo, "250-PIPELINING\n") ||
		!strings.Contains(ehlo, "250-STARTTLS\n") {
		t.Fatalf("EHLO:\n%s", ehlo)
	}
	c.replies("250 2.1.0 ", "250 2.1.5 ", "250 2.1.5 ", "354 ")
	if n := sc.writes.Load() - before; n != 1 {
		t.Errorf("replies to 5 pipelined commands (%d lines) took %d writes, want 1",
			strings.Count(ehlo, "\n")+5, n)
	}

	before = sc.writes.Load()
	c.raw("Subject: pipelined\r\n\r\nhi\r\n.\r\nQUIT\r\n")
	c.replies("250 2.0.0 Ok: queued as ", "221 ")
	if !c.closed() {
		t.Error("connection open after QUIT")
	}
	if n := sc.writes.Load() - before; n != 1 {
		t.Errorf("replies to the end of DATA and QUIT took %d writes, want 1", n)
	}
	if _, body := h.sub.last(t); !strings.HasSuffix(body, "Subject: pipelined\r\n\r\nhi\r\n") {
		t.Errorf("body:\n%q", body)
	}
}

// TestUnpipelinedRepliesNotHeld: a client that waits for each reply gets
// it without sending anything more, the EHLO reply in one write; the
// filter's own answers and a SASL challenge too.
func TestUnpipelinedRepliesNotHeld(t *testing.T) {
	t.Parallel()
	h := start(t, tarpitHCL("0s"))
	c, greet := h.dial("127.0.0.1:0", "")
	if !strings.HasPrefix(greet, "220 ") {
		t.Fatalf("greeting %q", greet)
	}
	// A reply held back would fail here, not after the client's 20 s.
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	sc := h.session()
	step := func(line, want string) {
		t.Helper()
		before := sc.writes.Load()
		c.expect(line, want)
		if n := sc.writes.Load() - before; n != 1 {
			t.Errorf("%s: reply took %d writes, want 1", line, n)
		}
	}
	step("EHLO client.test", "250-")
	step("NOOP", "250 ")
	step("VRFY alice@example.com", "25") // the filter's answer
	step("AUTH PLAIN", "334 ")
	step(b64("\x00alice@example.com\x00"+alicePassword), "235 ")
	step("MAIL FROM:<alice@example.com>", "250 ")
	step("RCPT TO:<bob@example.com>", "250 ")
	step("DATA", "354 ")
	c.raw("Subject: one by one\r\n\r\nhi\r\n")
	step(".", "250 2.0.0 Ok: queued as ")
	step("QUIT", "221 ")
	if !c.closed() {
		t.Error("connection open after QUIT")
	}
}

// TestPipelinedPartialLine: replies held back while pipelined commands
// remain go out when the filter must wait for the rest of a line.
func TestPipelinedPartialLine(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	c.raw("EHLO client.test\r\nNOOP\r\nNO")
	c.replies("250-", "250 ")
	c.raw("OP\r\n")
	c.replies("250 ")
}

// TestPipelinedCloseAfterWrite: when a reply in a pipelined group ends the
// connection (max_protocol_errors), the replies before it and the 421
// reach the client before it closes, and nothing after is answered.
func TestPipelinedCloseAfterWrite(t *testing.T) {
	t.Parallel()
	h, _ := startLogged(t, hardHCL, false) // max_protocol_errors = 5
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.raw("MAIL FROM:<x@remote.test>\r\n" + strings.Repeat("FOO\r\n", 5) + "BAR\r\nNOOP\r\n")
	c.replies("250 ")
	for range 5 {
		c.replies("500 5.5.2 ")
	}
	c.replies("421 4.7.0 Too many errors")
	if !c.closed() {
		t.Error("connection open after 421")
	}
}

// TestPipelinedRepliesBeforeTarpit: the reply to MAIL is not held back
// while the RCPT pipelined after it is tarpitted.
func TestPipelinedRepliesBeforeTarpit(t *testing.T) {
	t.Parallel()
	h := startLimits(t, tarpitHCL("1m"))
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.conn.SetDeadline(time.Now().Add(10 * time.Second)) // well within the minute
	c.raw("MAIL FROM:<x@remote.test>\r\nRCPT TO:<nobody@example.com>\r\n")
	c.replies("250 ")
	eventually(t, "the tarpit's log line", func() bool {
		return hasLine(h.logs, "msg=tarpit", "command=RCPT", "550 5.1.1")
	})
	// Shutdown (the harness's cleanup) ends the tarpit.
}

// blockingSub is a Submitter whose Submit waits until release is closed.
type blockingSub struct {
	capture
	entered chan struct{}
	release chan struct{}
}

func (b *blockingSub) Submit(ctx context.Context, env hub.Envelope, body io.Reader) (hub.QueueID, error) {
	close(b.entered)
	<-b.release
	return b.capture.Submit(ctx, env, body)
}

// TestPipelinedRepliesBeforeSubmit: a client that pipelines MAIL, RCPT and
// its whole message in BDAT gets the replies to MAIL and RCPT while Submit
// waits for the queue, and the reply to BDAT once it is done.
func TestPipelinedRepliesBeforeSubmit(t *testing.T) {
	t.Parallel()
	sub := &blockingSub{entered: make(chan struct{}), release: make(chan struct{})}
	h := startWith(t, internetHCL, func(_ *policy.Config, o *Options) { o.Submitter = sub })
	var once sync.Once
	release := func() { once.Do(func() { close(sub.release) }) }
	t.Cleanup(release) // before the harness's Shutdown, should the test fail
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	msg := "Subject: chunked\r\n\r\nhi\r\n"
	c.raw(fmt.Sprintf("MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.com>\r\nBDAT %d LAST\r\n%s", len(msg), msg))
	select {
	case <-sub.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Submit not called")
	}
	c.replies("250 2.1.0 ", "250 2.1.5 ")
	release()
	c.replies("250 2.0.0 Ok: queued as ")
	c.expect("NOOP", "250 ")
}
