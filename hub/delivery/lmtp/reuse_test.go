package lmtp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"hubd/hub/delivery"
)

// Messages to one server share a connection, up to the per-connection cap;
// Close QUITs the idle one. Over TCP and over a unix socket.
func TestConnectionReuse(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			srv := startLMTP(t, serverConfig{network: network})
			d := New(Options{Hostname: "hub.example.com", MaxMessagesPerConnection: 3, IdleTimeout: time.Minute})
			for i := range 7 {
				res := d.Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil),
					recipients(fmt.Sprintf("u%d@example.com", i)))
				want(t, res[0], delivery.Delivered, 250, "2.0.0")
			}
			msgs := srv.messages()
			if len(msgs) != 7 {
				t.Fatalf("server got %d messages", len(msgs))
			}
			// 3 + 3 + 1: the third connection is still idle.
			for i, m := range msgs {
				if want := i/3 + 1; m.conn != want {
					t.Errorf("message %d came on connection %d, want %d", i, m.conn, want)
				}
				if m.lhlo != "hub.example.com" || len(m.rcpts) != 1 || m.rcpts[0] != fmt.Sprintf("u%d@example.com", i) {
					t.Errorf("message %d: LHLO %q RCPT %v", i, m.lhlo, m.rcpts)
				}
			}
			if n := srv.connCount(); n != 3 {
				t.Errorf("%d connections for 7 messages at 3 per connection, want 3", n)
			}
			srv.waitClosed(t, 1, 5*time.Second)
			srv.waitClosed(t, 2, 5*time.Second)
			if n := d.pool.Len(); n != 1 {
				t.Errorf("%d idle connections, want 1", n)
			}
			d.Close()
			srv.waitClosed(t, 3, 5*time.Second)
			if n := d.pool.Len(); n != 0 {
				t.Errorf("%d idle connections after Close", n)
			}
		})
	}
}

// An idle connection the server has dropped is found dead by RSET; the
// message goes out on a fresh connection, as if nothing had happened.
func TestIdleConnectionDropped(t *testing.T) {
	srv := startLMTP(t, serverConfig{})
	d := New(Options{IdleTimeout: time.Minute})
	defer d.Close()
	msg := message("a@example.org", []byte(simpleBody), nil)
	want(t, d.Deliver(context.Background(), hop(srv.addr), msg, recipients("a@example.com"))[0], delivery.Delivered, 250, "2.0.0")
	srv.dropConnections()
	srv.waitClosed(t, 1, 5*time.Second)
	res := d.Deliver(context.Background(), hop(srv.addr), msg, recipients("b@example.com"))
	want(t, res[0], delivery.Delivered, 250, "2.0.0")
	if res[0].Connection {
		t.Error("a dead idle connection counted against the next hop")
	}
	if msgs := srv.messages(); len(msgs) != 2 || msgs[1].conn != 2 {
		t.Fatalf("messages %+v", msgs)
	}
}

// An idle connection is QUIT after the idle timeout.
func TestIdleTimeoutQuits(t *testing.T) {
	srv := startLMTP(t, serverConfig{})
	d := New(Options{IdleTimeout: 50 * time.Millisecond})
	defer d.Close()
	want(t, d.Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil),
		recipients("a@example.com"))[0], delivery.Delivered, 250, "2.0.0")
	srv.waitClosed(t, 1, 5*time.Second)
	if n := d.pool.Len(); n != 0 {
		t.Errorf("%d idle connections after the idle timeout", n)
	}
}

// Refusals leave the connection reusable: MAIL refused, every RCPT refused.
// A connection that broke in the middle of a transaction is not reused.
func TestReuseAfterRefusals(t *testing.T) {
	refuse := true
	srv := startLMTP(t, serverConfig{rcptErr: func(rcpt string) error {
		if refuse && rcpt == "gone@example.com" {
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
		}
		return nil
	}})
	d := New(Options{IdleTimeout: time.Minute})
	defer d.Close()
	msg := message("a@example.org", []byte(simpleBody), nil)
	want(t, d.Deliver(context.Background(), hop(srv.addr), msg, recipients("gone@example.com"))[0], delivery.Failed, 550, "5.1.1")
	want(t, d.Deliver(context.Background(), hop(srv.addr), msg, recipients("a@example.com"))[0], delivery.Delivered, 250, "2.0.0")
	if n := srv.connCount(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if msgs := srv.messages(); len(msgs) != 1 || len(msgs[0].rcpts) != 1 || msgs[0].rcpts[0] != "a@example.com" {
		t.Errorf("messages %+v: the refused recipient leaked into the next transaction", msgs)
	}
}

// RFC 3461 §4.2: ORCPT goes with RCPT to a server that offers DSN, and
// nowhere else; NOTIFY never does (the hub reports final delivery).
func TestORCPT(t *testing.T) {
	rcpts := recipients("alice+news@example.com", "bob@example.com", "carol@example.com")
	rcpts[0].DSN.ORCPT = "rfc822;news@example.com"
	rcpts[0].DSN.Notify = []string{"SUCCESS"}
	rcpts[1].DSN.ORCPT = "utf-8;bøb@example.com"
	for _, dsn := range []bool{true, false} {
		srv := startLMTP(t, serverConfig{dsn: dsn, utf8: true})
		d := New(Options{})
		res := d.Deliver(context.Background(), hop(srv.addr), message("a@example.org", []byte(simpleBody), nil), rcpts)
		d.Close()
		for _, r := range res {
			want(t, r, delivery.Delivered, 250, "2.0.0")
		}
		m := srv.messages()[0]
		wantORCPT := []string{"rfc822;news@example.com", "utf-8;bøb@example.com", ""}
		if !dsn {
			wantORCPT = []string{"", "", ""}
		}
		if fmt.Sprint(m.rcpts) != "[alice+news@example.com bob@example.com carol@example.com]" || fmt.Sprint(m.orcpt) != fmt.Sprint(wantORCPT) {
			t.Errorf("DSN %v: RCPT %v ORCPT %q, want %q", dsn, m.rcpts, m.orcpt, wantORCPT)
		}
	}
}
