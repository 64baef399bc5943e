package smtpout

import (
	"net/textproto"
	"strings"
	"testing"
	"time"

	"hubd/hub/delivery"
	"hubd/internal/smtpsink"
)

// TestPipeliningGroupsCommands: with PIPELINING the server receives MAIL and
// every RCPT before it has answered anything. The script reads all three
// commands before its first reply, so a lock-step client would wait for the
// MAIL reply forever (until its timeout) and fail the test: the evidence is
// in the order of reads, not in timing.
func TestPipeliningGroupsCommands(t *testing.T) {
	var data string
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250-pipe.test\r\n250-PIPELINING\r\n250 8BITMIME")
		s.read(tp) // MAIL
		s.read(tp) // RCPT a
		s.read(tp) // RCPT nobody
		s.read(tp) // RCPT b
		tp.PrintfLine("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok")
		s.read(tp) // DATA: only after the replies (RFC 2920 §3.1)
		tp.PrintfLine("354 go")
		b, _ := tp.ReadDotBytes()
		data = string(b)
		tp.PrintfLine("250 2.0.0 queued")
		s.read(tp) // QUIT from Close
		tp.PrintfLine("221 bye")
	})
	opts := testOptions()
	opts.CommandTimeout = time.Second
	res := deliver(t, opts, smartHop(s.ln.Addr().String()), message("x\r\n"), rcpts("a@remote.test", "nobody@remote.test", "b@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	expect(t, res[1], delivery.Failed, 550, "5.1.1")
	expect(t, res[2], delivery.Delivered, 250, "2.0.0")
	<-s.done
	want := []string{"EHLO out.hub.test", "MAIL FROM:<sender@hub.test>", "RCPT TO:<a@remote.test>",
		"RCPT TO:<nobody@remote.test>", "RCPT TO:<b@remote.test>", "DATA", "QUIT"}
	if got := s.commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q\nwant     %q", got, want)
	}
	if data != "x\n" {
		t.Errorf("data %q", data)
	}
}

// TestPipelinedMailRefused: the RCPT replies after a refused MAIL are read
// and ignored, the recipients get MAIL's reply, and the connection, in a
// known state, is kept (QUIT comes from Close, not before).
func TestPipelinedMailRefused(t *testing.T) {
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250-pipe.test\r\n250 PIPELINING")
		s.read(tp)
		s.read(tp)
		s.read(tp)
		tp.PrintfLine("550 5.7.1 sender refused\r\n503 5.5.1 MAIL first\r\n503 5.5.1 MAIL first")
		s.read(tp)
		tp.PrintfLine("221 bye")
	})
	res := deliver(t, testOptions(), smartHop(s.ln.Addr().String()), message("x\r\n"), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		expect(t, r, delivery.Failed, 550, "5.7.1")
	}
	<-s.done
	if got := s.commands(); len(got) != 5 || got[4] != "QUIT" {
		t.Errorf("commands %q", got)
	}
}

// TestLockStepWithoutPipelining: without PIPELINING each command waits for
// its reply, so after a refused MAIL no RCPT is ever sent. A pipelining
// client would already have sent its RCPTs, which the script would read
// instead of QUIT.
func TestLockStepWithoutPipelining(t *testing.T) {
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250-plain.test\r\n250 8BITMIME")
		s.read(tp) // MAIL
		tp.PrintfLine("550 5.7.1 sender refused")
		s.read(tp) // must be QUIT (from Close), not RCPT
		tp.PrintfLine("221 bye")
	})
	res := deliver(t, testOptions(), smartHop(s.ln.Addr().String()), message("x\r\n"), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		expect(t, r, delivery.Failed, 550, "5.7.1")
	}
	<-s.done
	want := []string{"EHLO out.hub.test", "MAIL FROM:<sender@hub.test>", "QUIT"}
	if got := s.commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q\nwant     %q", got, want)
	}
}

// TestReusePipelinesRSET: on a reused connection RSET travels in the same
// group as MAIL and RCPT; the script reads all three before replying.
func TestReusePipelinesRSET(t *testing.T) {
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250-pipe.test\r\n250 PIPELINING")
		for i := range 2 {
			if i == 1 {
				s.read(tp) // RSET
			}
			s.read(tp) // MAIL
			s.read(tp) // RCPT
			if i == 1 {
				tp.PrintfLine("250 2.0.0 reset")
			}
			tp.PrintfLine("250 ok\r\n250 ok")
			s.read(tp)
			tp.PrintfLine("354 go")
			tp.ReadDotBytes()
			tp.PrintfLine("250 2.0.0 queued")
		}
		s.read(tp)
		tp.PrintfLine("221 bye")
	})
	opts := testOptions()
	opts.CommandTimeout = time.Second
	d := New(opts)
	for i := range 2 {
		expect(t, deliverWith(t, d, smartHop(s.ln.Addr().String()), numbered(i), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	}
	d.Close()
	<-s.done
	want := "EHLO out.hub.test|MAIL FROM:<sender@hub.test>|RCPT TO:<a@remote.test>|DATA|" +
		"RSET|MAIL FROM:<sender@hub.test>|RCPT TO:<a@remote.test>|DATA|QUIT"
	if got := strings.Join(s.commands(), "|"); got != want {
		t.Errorf("commands %q\nwant     %q", got, want)
	}
}

// TestIdleConnectionQuit: the idle timer ends the session with QUIT.
func TestIdleConnectionQuit(t *testing.T) {
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250 plain.test")
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("354 go")
		tp.ReadDotBytes()
		tp.PrintfLine("250 2.0.0 queued")
		s.read(tp) // waits for the idle timer
		tp.PrintfLine("221 bye")
	})
	opts := testOptions()
	opts.IdleTimeout = 50 * time.Millisecond
	d := shared(t, opts)
	expect(t, deliverWith(t, d, smartHop(s.ln.Addr().String()), numbered(0), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	<-s.done
	if got := s.commands(); got[len(got)-1] != "QUIT" {
		t.Errorf("commands %q", got)
	}
}

// TestPipeliningOnOffSameResults: against real servers with and without
// PIPELINING, per-recipient outcomes are the same.
func TestPipeliningOnOffSameResults(t *testing.T) {
	rcpt := func(addr string) error {
		switch addr {
		case "gone@remote.test":
			return smtpErr(550, 5, 1, 1, "no such user")
		case "busy@remote.test":
			return smtpErr(452, 4, 2, 2, "mailbox full")
		}
		return nil
	}
	for _, noPipe := range []bool{false, true} {
		sink := smtpsink.Start(t, smtpsink.Options{NoPipelining: noPipe, Rcpt: rcpt})
		res := deliver(t, testOptions(), smartHop(sink.Addr()), message("x\r\n"),
			rcpts("a@remote.test", "gone@remote.test", "busy@remote.test", "b@remote.test"))
		expect(t, res[0], delivery.Delivered, 250, "2.0.0")
		expect(t, res[1], delivery.Failed, 550, "5.1.1")
		expect(t, res[2], delivery.Deferred, 452, "4.2.2")
		expect(t, res[3], delivery.Delivered, 250, "2.0.0")
		if m := sink.WaitFor(t, 1, waitLong)[0]; strings.Join(m.To, ",") != "a@remote.test,b@remote.test" {
			t.Errorf("no pipelining %v: sink got %v", noPipe, m)
		}
	}
}

// TestReusedConnectionRefusesRSET: a server that timed the idle connection
// out answers the RSET with 421 and hangs up; the message goes out on a
// fresh connection and the 421 is never charged to it.
func TestReusedConnectionRefusesRSET(t *testing.T) {
	transaction := func(s *scripted, tp *textproto.Conn) {
		s.read(tp) // MAIL
		tp.PrintfLine("250 ok")
		s.read(tp) // RCPT
		tp.PrintfLine("250 ok")
		s.read(tp) // DATA
		tp.PrintfLine("354 go")
		tp.ReadDotBytes()
		tp.PrintfLine("250 2.0.0 queued")
	}
	greet := func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250 plain.test")
	}
	s := startScripted(t,
		func(s *scripted, tp *textproto.Conn) {
			greet(s, tp)
			transaction(s, tp)
			s.read(tp) // RSET on reuse
			tp.PrintfLine("421 4.4.2 idle too long, closing")
		},
		func(s *scripted, tp *textproto.Conn) {
			greet(s, tp)
			transaction(s, tp)
			s.read(tp) // QUIT from Close
			tp.PrintfLine("221 bye")
		})
	d := New(testOptions())
	for i := range 2 {
		r := deliverWith(t, d, smartHop(s.ln.Addr().String()), numbered(i), rcpts("a@remote.test"))[0]
		expect(t, r, delivery.Delivered, 250, "2.0.0")
	}
	d.Close()
	<-s.done
	want := "EHLO out.hub.test|MAIL FROM:<sender@hub.test>|RCPT TO:<a@remote.test>|DATA|RSET|" +
		"EHLO out.hub.test|MAIL FROM:<sender@hub.test>|RCPT TO:<a@remote.test>|DATA|QUIT"
	if got := strings.Join(s.commands(), "|"); got != want {
		t.Errorf("commands %q\nwant     %q", got, want)
	}
}
