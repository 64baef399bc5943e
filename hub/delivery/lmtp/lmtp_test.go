package lmtp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"hubd/hub"
	"hubd/hub/delivery"
)

func smtpErr(code int, enh smtp.EnhancedCode, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
}

// want checks one result's status, code and enhanced code.
func want(t *testing.T, got delivery.Result, st delivery.Status, code int, enhanced string) {
	t.Helper()
	if got.Status != st || got.Code != code || got.Enhanced != enhanced {
		t.Errorf("result = %v %d %s %q, want %v %d %s", got.Status, got.Code, got.Enhanced, got.Text, st, code, enhanced)
	}
}

// RFC 2033 §4.2: one reply per recipient after the dot, each deciding that
// recipient alone; over TCP and over a unix socket.
func TestPerRecipientStatus(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			srv := startLMTP(t, serverConfig{network: network, dataErr: func(rcpt string) error {
				switch rcpt {
				case "b@example.com":
					return smtpErr(452, smtp.EnhancedCode{4, 2, 2}, "mailbox full")
				case "c@example.com":
					return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
				}
				return nil
			}})
			d := New(Options{Hostname: "hub.example.com"})
			res := d.Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil),
				recipients("a@example.com", "b@example.com", "c@example.com"))
			if len(res) != 3 {
				t.Fatalf("got %d results", len(res))
			}
			want(t, res[0], delivery.Delivered, 250, "2.0.0")
			want(t, res[1], delivery.Deferred, 452, "4.2.2")
			want(t, res[2], delivery.Failed, 550, "5.1.1")
			if !strings.Contains(res[1].Text, "mailbox full") || !strings.Contains(res[2].Text, "no such user") {
				t.Errorf("texts = %q, %q", res[1].Text, res[2].Text)
			}
			for i, r := range res {
				if r.RemoteMTA != srv.addr || r.Connection {
					t.Errorf("result %d: RemoteMTA %q Connection %v, want %q false", i, r.RemoteMTA, r.Connection, srv.addr)
				}
			}
			msgs := srv.messages()
			if len(msgs) != 1 {
				t.Fatalf("server got %d messages", len(msgs))
			}
			m := msgs[0]
			if m.lhlo != "hub.example.com" || m.from != "a@example.org" || len(m.rcpts) != 3 {
				t.Errorf("server saw LHLO %q MAIL %q RCPT %v", m.lhlo, m.from, m.rcpts)
			}
			if string(m.body) != simpleBody {
				t.Errorf("body = %q", m.body)
			}
		})
	}
}

// A refusal at RCPT settles that recipient; the others still get the mail.
func TestRcptRefused(t *testing.T) {
	srv := startLMTP(t, serverConfig{rcptErr: func(rcpt string) error {
		if rcpt == "b@example.com" {
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "unknown user")
		}
		if rcpt == "c@example.com" {
			return smtpErr(450, smtp.EnhancedCodeNotSet, "try later")
		}
		return nil
	}})
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), message("", []byte(simpleBody), nil),
		recipients("a@example.com", "b@example.com", "c@example.com", "d@example.com"))
	want(t, res[0], delivery.Delivered, 250, "2.0.0")
	want(t, res[1], delivery.Failed, 550, "5.1.1")
	// go-smtp's server fills in X.0.0 when the backend gives none.
	want(t, res[2], delivery.Deferred, 450, "4.0.0")
	want(t, res[3], delivery.Delivered, 250, "2.0.0")
	msgs := srv.messages()
	if len(msgs) != 1 || strings.Join(msgs[0].rcpts, ",") != "a@example.com,d@example.com" || msgs[0].from != "" {
		t.Fatalf("server got %+v", msgs)
	}
}

// When no RCPT is accepted there is no DATA.
func TestNoRecipientAccepted(t *testing.T) {
	srv := startLMTP(t, serverConfig{rcptErr: func(string) error {
		return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "unknown user")
	}})
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil),
		recipients("a@example.com", "b@example.com"))
	want(t, res[0], delivery.Failed, 550, "5.1.1")
	want(t, res[1], delivery.Failed, 550, "5.1.1")
	if n := srv.dataCount(); n != 0 {
		t.Errorf("server saw %d DATA, want 0", n)
	}
}

// A MAIL refusal applies to every recipient with the server's reply.
func TestMailRefused(t *testing.T) {
	srv := startLMTP(t, serverConfig{mailErr: smtpErr(451, smtp.EnhancedCode{4, 3, 0}, "disk trouble")})
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil),
		recipients("a@example.com", "b@example.com"))
	for _, r := range res {
		want(t, r, delivery.Deferred, 451, "4.3.0")
		if r.Connection || r.RemoteMTA != srv.addr {
			t.Errorf("Connection %v RemoteMTA %q", r.Connection, r.RemoteMTA)
		}
	}
}

// Two recipients with one address get one RCPT (one stored copy) and share
// its outcome.
func TestDuplicateAddress(t *testing.T) {
	srv := startLMTP(t, serverConfig{})
	rcpts := []delivery.Recipient{{Address: "a@example.com", Key: "Q1.x"}, {Address: "a@example.com", Key: "Q1.y"}}
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil), rcpts)
	want(t, res[0], delivery.Delivered, 250, "2.0.0")
	want(t, res[1], delivery.Delivered, 250, "2.0.0")
	if msgs := srv.messages(); len(msgs) != 1 || len(msgs[0].rcpts) != 1 {
		t.Fatalf("server got %+v", msgs)
	}
}

// Nothing listening: every recipient Deferred 451 4.4.1 with Connection.
func TestServerNotListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, a := range []string{addr, "unix:" + t.TempDir() + "/missing.sock"} {
		res := New(Options{DialTimeout: 2 * time.Second}).Deliver(context.Background(), hop(a),
			message("a@example.org", []byte(simpleBody), nil), recipients("a@example.com", "b@example.com"))
		for _, r := range res {
			want(t, r, delivery.Deferred, 451, "4.4.1")
			if !r.Connection {
				t.Errorf("%s: Connection not set: %+v", a, r)
			}
		}
	}
}

// A server that accepts the connection and never greets is Deferred within
// CommandTimeout.
func TestServerHangsBeforeGreeting(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr := startScript(t, func(c net.Conn, r *bufio.Reader) { <-release })
	start := time.Now()
	res := New(Options{DialTimeout: time.Second, CommandTimeout: 200 * time.Millisecond}).Deliver(context.Background(),
		hop(addr), message("a@example.org", []byte(simpleBody), nil), recipients("a@example.com"))
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
	want(t, res[0], delivery.Deferred, 451, "4.4.1")
	if !res[0].Connection || !strings.Contains(res[0].Text, "timeout") {
		t.Errorf("result = %+v", res[0])
	}
}

// A server that takes the message and never replies after the dot is
// Deferred 451 4.4.2 within DataTimeout: never Delivered on a guess.
func TestServerHangsAfterDot(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr := startScript(t, func(c net.Conn, r *bufio.Reader) {
		if _, ok := scriptUntilDot(c, r); ok {
			<-release
		}
	})
	start := time.Now()
	res := New(Options{CommandTimeout: 5 * time.Second, DataTimeout: 300 * time.Millisecond}).Deliver(context.Background(),
		hop(addr), message("a@example.org", []byte(simpleBody), nil), recipients("a@example.com", "b@example.com"))
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
	for _, r := range res {
		want(t, r, delivery.Deferred, 451, "4.4.2")
		if r.Connection {
			t.Errorf("Connection set after a transaction started: %+v", r)
		}
	}
}

// The connection drops after the first recipient's reply: the first is
// Delivered, the rest Deferred 451 4.4.2.
func TestConnectionLostAfterData(t *testing.T) {
	addr := startScript(t, func(c net.Conn, r *bufio.Reader) {
		if _, ok := scriptUntilDot(c, r); ok {
			io.WriteString(c, "250 2.0.0 <a@example.com> saved\r\n")
		}
	})
	res := New(Options{}).Deliver(context.Background(), hop(addr), message("a@example.org", []byte(simpleBody), nil),
		recipients("a@example.com", "b@example.com", "c@example.com"))
	want(t, res[0], delivery.Delivered, 250, "2.0.0")
	if res[0].Text != "<a@example.com> saved" {
		t.Errorf("text = %q", res[0].Text)
	}
	want(t, res[1], delivery.Deferred, 451, "4.4.2")
	want(t, res[2], delivery.Deferred, 451, "4.4.2")
}

// Cancelling ctx while the server is silent closes the connection at once.
func TestContextCancelled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	gotDot := make(chan struct{}, 1)
	addr := startScript(t, func(c net.Conn, r *bufio.Reader) {
		if _, ok := scriptUntilDot(c, r); ok {
			gotDot <- struct{}{}
			<-release
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-gotDot
		cancel()
	}()
	start := time.Now()
	res := New(Options{}).Deliver(ctx, hop(addr), message("a@example.org", []byte(simpleBody), nil), recipients("a@example.com"))
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v", el)
	}
	want(t, res[0], delivery.Deferred, 451, "4.4.2")
	if res[0].Connection || !strings.Contains(res[0].Text, "abandoned") {
		t.Errorf("result = %+v", res[0])
	}
}

// Lines that begin with "." (and a line that is only ".") arrive intact:
// the client stuffs them, the server unstuffs them (RFC 5321 §4.5.2).
func TestDotLines(t *testing.T) {
	body := "Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\n...\r\nend\r\n.\r\n"
	srv := startLMTP(t, serverConfig{network: "unix"})
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(body), nil), recipients("a@example.com"))
	want(t, res[0], delivery.Delivered, 250, "2.0.0")
	msgs := srv.messages()
	if len(msgs) != 1 || string(msgs[0].body) != body {
		t.Fatalf("server got %+v, want body %q", msgs, body)
	}
}

// A 1 MB message arrives byte for byte.
func TestLargeMessage(t *testing.T) {
	var b bytes.Buffer
	b.WriteString("Subject: big\r\n\r\n")
	for i := 0; b.Len() < 1<<20; i++ {
		if i%7 == 0 {
			b.WriteString(".")
		}
		fmt.Fprintf(&b, "line %d %s\r\n", i, strings.Repeat("x", i%97))
	}
	body := b.Bytes()
	srv := startLMTP(t, serverConfig{})
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), message("a@example.org", body, nil), recipients("a@example.com"))
	want(t, res[0], delivery.Delivered, 250, "2.0.0")
	msgs := srv.messages()
	if len(msgs) != 1 || !bytes.Equal(msgs[0].body, body) {
		t.Fatalf("body differs (got %d messages)", len(msgs))
	}
	if msgs[0].opts.Size != int64(len(body)) {
		t.Errorf("SIZE=%d declared, want %d", msgs[0].opts.Size, len(body))
	}
}

// MAIL FROM parameters: SIZE when offered, BODY=8BITMIME, SMTPUTF8 for an
// SMTPUTF8 envelope with a non-ASCII recipient.
func TestMailParameters(t *testing.T) {
	srv := startLMTP(t, serverConfig{utf8: true, maxBytes: 1 << 20})
	body := []byte("Subject: caf\xc3\xa9\r\n\r\n8-bit caf\xc3\xa9\r\n")
	msg := message("a@example.org", body, func(e *hub.Envelope) { e.SMTPUTF8, e.Body = true, "8BITMIME" })
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), msg, recipients("jörg@example.com"))
	want(t, res[0], delivery.Delivered, 250, "2.0.0")
	msgs := srv.messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages", len(msgs))
	}
	o := msgs[0].opts
	if o.Size != int64(len(body)) || o.Body != smtp.Body8BitMIME || !o.UTF8 {
		t.Errorf("MAIL options = %+v", o)
	}
	if !bytes.Equal(msgs[0].body, body) || msgs[0].rcpts[0] != "jörg@example.com" {
		t.Errorf("server got %q for %v", msgs[0].body, msgs[0].rcpts)
	}
}

// Mail the server cannot take is Failed before it is sent: SMTPUTF8
// needed but not offered (5.6.7), larger than the advertised SIZE (5.3.4).
func TestRefusedLocally(t *testing.T) {
	t.Run("smtputf8", func(t *testing.T) {
		srv := startLMTP(t, serverConfig{})
		msg := message("a@example.org", []byte(simpleBody), func(e *hub.Envelope) { e.SMTPUTF8 = true })
		res := New(Options{}).Deliver(context.Background(), hop(srv.addr), msg, recipients("jörg@example.com"))
		want(t, res[0], delivery.Failed, 553, "5.6.7")
		if !strings.Contains(res[0].Text, "non-ASCII recipient address <jörg@example.com>") {
			t.Errorf("text %q does not name the address", res[0].Text)
		}
		if srv.dataCount() != 0 {
			t.Error("message was sent")
		}
	})
	t.Run("smtputf8-header", func(t *testing.T) {
		// ASCII addresses, a UTF-8 Subject: the reply names the header,
		// not the addresses (the DSN quotes it).
		srv := startLMTP(t, serverConfig{})
		msg := message("a@example.org", []byte("Subject: Grüße\r\n\r\nhi\r\n"), func(e *hub.Envelope) { e.SMTPUTF8 = true })
		res := New(Options{}).Deliver(context.Background(), hop(srv.addr), msg, recipients("a@example.com"))
		want(t, res[0], delivery.Failed, 553, "5.6.7")
		if !strings.Contains(res[0].Text, "non-ASCII header fields (its addresses are ASCII)") || strings.Contains(res[0].Text, "address <") {
			t.Errorf("text %q does not name the header", res[0].Text)
		}
	})
	t.Run("ascii-smtputf8", func(t *testing.T) {
		// An all-ASCII message whose client asked for SMTPUTF8 goes
		// without the parameter.
		srv := startLMTP(t, serverConfig{})
		msg := message("a@example.org", []byte(simpleBody), func(e *hub.Envelope) { e.SMTPUTF8 = true })
		res := New(Options{}).Deliver(context.Background(), hop(srv.addr), msg, recipients("a@example.com"))
		want(t, res[0], delivery.Delivered, 250, "2.0.0")
	})
	t.Run("size", func(t *testing.T) {
		srv := startLMTP(t, serverConfig{maxBytes: 20})
		res := New(Options{}).Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil),
			recipients("a@example.com"))
		want(t, res[0], delivery.Failed, 552, "5.3.4")
		if srv.dataCount() != 0 {
			t.Error("message was sent")
		}
	})
}

// A queued message that cannot be read, or a hop without a server, is
// Deferred without touching the network.
func TestLocalProblems(t *testing.T) {
	msg := message("a@example.org", nil, nil)
	msg.Open = func() (io.ReadCloser, error) { return nil, io.ErrUnexpectedEOF }
	srv := startLMTP(t, serverConfig{})
	res := New(Options{}).Deliver(context.Background(), hop(srv.addr), msg, recipients("a@example.com"))
	want(t, res[0], delivery.Deferred, 451, "4.3.0")

	res = New(Options{}).Deliver(context.Background(), hop(""), message("a@example.org", []byte(simpleBody), nil), recipients("a@example.com"))
	want(t, res[0], delivery.Deferred, 451, "4.3.5")
	if !res[0].Connection {
		t.Error("Connection not set for a hop without a server")
	}
}

// A server that stops reading in the middle of the message is Deferred
// within DataTimeout: each write has its own deadline.
func TestServerStopsReading(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr := startScript(t, func(c net.Conn, r *bufio.Reader) {
		io.WriteString(c, "220 script.test LMTP ready\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
			case strings.HasPrefix(cmd, "LHLO"):
				io.WriteString(c, "250 script.test\r\n")
			case cmd == "DATA":
				io.WriteString(c, "354 go ahead\r\n")
				<-release // and never read again
				return
			default:
				io.WriteString(c, "250 2.0.0 ok\r\n")
			}
		}
	})
	// Larger than the loopback socket buffers on both sides together.
	body := append([]byte("Subject: stuck\r\n\r\n"), bytes.Repeat([]byte("0123456789abcde\r\n"), 2<<20)...)
	start := time.Now()
	res := New(Options{CommandTimeout: 5 * time.Second, DataTimeout: 300 * time.Millisecond}).Deliver(context.Background(),
		hop(addr), message("a@example.org", body, nil), recipients("a@example.com"))
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %v", el)
	}
	want(t, res[0], delivery.Deferred, 451, "4.4.2")
	if !strings.Contains(res[0].Text, "timeout") {
		t.Errorf("text = %q", res[0].Text)
	}
}
