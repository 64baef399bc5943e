package smtpout

import (
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
)

// scripted is an SMTP server driven by test functions, one per connection
// in the order they are accepted, for the protocol corners the go-smtp sink
// cannot produce (refused EHLO, multi-line replies, a connection dropped
// after the data, commands read before any reply). It records the client's
// command lines, from all connections.
type scripted struct {
	ln   net.Listener
	mu   sync.Mutex
	cmds []string
	done chan struct{}
}

func startScripted(t *testing.T, scripts ...func(s *scripted, tp *textproto.Conn)) *scripted {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for _, script := range scripts {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			script(s, textproto.NewConn(c))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-s.done })
	return s
}

// read reads one command and records it.
func (s *scripted) read(tp *textproto.Conn) string {
	l, _ := tp.ReadLine()
	s.mu.Lock()
	s.cmds = append(s.cmds, l)
	s.mu.Unlock()
	return l
}

func (s *scripted) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

func TestHELOFallbackAndMultilineReplies(t *testing.T) {
	var data string
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220-old.test\r\n220 ready")
		s.read(tp) // EHLO
		tp.PrintfLine("502 5.5.1 what is EHLO")
		s.read(tp) // HELO
		tp.PrintfLine("250 old.test")
		s.read(tp) // MAIL
		tp.PrintfLine("250 ok")
		s.read(tp) // RCPT
		tp.PrintfLine("250-first line\r\n250 2.1.5 ok")
		s.read(tp) // DATA
		tp.PrintfLine("354 go")
		b, _ := tp.ReadDotBytes()
		data = string(b)
		tp.PrintfLine("250-2.0.0 queued\r\n250 2.0.0 as ABC")
		s.read(tp) // QUIT
		tp.PrintfLine("221 bye")
	})
	msg := message("x\r\n")
	res := deliver(t, testOptions(), smartHop(s.ln.Addr().String()), msg, rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if res[0].Text != "queued / as ABC" {
		t.Errorf("text %q", res[0].Text)
	}
	<-s.done
	want := []string{"EHLO out.hub.test", "HELO out.hub.test", "MAIL FROM:<sender@hub.test>", "RCPT TO:<a@remote.test>", "DATA", "QUIT"}
	if got := s.commands(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q\nwant     %q", got, want)
	}
	if data != "x\n" { // ReadDotBytes returns LF line endings
		t.Errorf("data %q", data)
	}
}

func TestESMTPParameters(t *testing.T) {
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250-ext.test\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8")
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("354 go")
		tp.ReadDotBytes()
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("221 bye")
	})
	msg := message("body\r\n")
	msg.Envelope = &hub.Envelope{From: "s@hub.test", Body: "8BITMIME", SMTPUTF8: true, DSNRet: "HDRS", DSNEnvID: "id+1=x"}
	rc := rcpts("a@remote.test")
	rc[0].DSN = hub.Recipient{Address: "a@remote.test", Notify: []string{"FAILURE", "DELAY"}, ORCPT: "rfc822;orig@remote.test"}
	res := deliver(t, testOptions(), smartHop(s.ln.Addr().String()), msg, rc)
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	<-s.done
	cmds := s.commands()
	if want := "MAIL FROM:<s@hub.test> SIZE=6 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+3Dx"; cmds[1] != want {
		t.Errorf("MAIL = %q\nwant   %q", cmds[1], want)
	}
	if want := "RCPT TO:<a@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;orig@remote.test"; cmds[2] != want {
		t.Errorf("RCPT = %q\nwant   %q", cmds[2], want)
	}
}

func TestConnectionLostAfterData(t *testing.T) {
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250 hi")
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("550 5.1.1 unknown") // first recipient refused
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("354 go")
		tp.ReadDotBytes()
		// Hang up without the final reply.
	})
	res := deliver(t, testOptions(), smartHop(s.ln.Addr().String()), message("x\r\n"), rcpts("a@remote.test", "b@remote.test"))
	expect(t, res[0], delivery.Failed, 550, "5.1.1")
	expect(t, res[1], delivery.Deferred, 451, "4.4.2")
}

// TestDataAnswered250: a server that answers DATA with 250 instead of 354
// took no message; the recipient stays deferred, never "delivered".
func TestDataAnswered250(t *testing.T) {
	s := startScripted(t, func(s *scripted, tp *textproto.Conn) {
		tp.PrintfLine("220 ready")
		s.read(tp)
		tp.PrintfLine("250 hi")
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("250 ok")
		s.read(tp)
		tp.PrintfLine("250 thanks") // DATA answered as if the message had come
		s.read(tp)
		tp.PrintfLine("221 bye")
	})
	res := deliver(t, testOptions(), smartHop(s.ln.Addr().String()), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.5.0")
}

func TestReplyParsing(t *testing.T) {
	for _, c := range []struct {
		in       string
		code     int
		enhanced string
		text     string
		bad      bool
	}{
		{in: "250 2.1.0 ok\r\n", code: 250, enhanced: "2.1.0", text: "ok"},
		{in: "250 ok\r\n", code: 250, text: "ok"},
		{in: "550 4.1.1 class mismatch\r\n", code: 550, text: "4.1.1 class mismatch"},
		{in: "250\r\n", code: 250},
		{in: "250-a\r\n250-b\r\n250 c\r\n", code: 250, text: "a / b / c"},
		{in: "250-2.0.0 a\r\n250 2.0.0 b\r\n", code: 250, enhanced: "2.0.0", text: "a / b"},
		{in: "250-a\r\n251 b\r\n", bad: true},
		{in: "hello\r\n", bad: true},
		{in: "999 x\r\n", bad: true},
	} {
		a, b := net.Pipe()
		go func() { b.Write([]byte(c.in)); b.Close() }()
		r, err := newConn(a, "h", "a").readReply(time.Second)
		a.Close()
		if c.bad {
			if err == nil {
				t.Errorf("%q: parsed as %+v", c.in, r)
			}
			continue
		}
		if err != nil || r.Code != c.code || r.Enhanced != c.enhanced || r.text() != c.text {
			t.Errorf("%q: %+v %q %v", c.in, r, r.text(), err)
		}
	}
}

func TestXtext(t *testing.T) {
	if got := xtext("a+b=c d\x01é"); got != "a+2Bb+3Dc+20d+01+C3+A9" {
		t.Errorf("xtext = %q", got)
	}
}
