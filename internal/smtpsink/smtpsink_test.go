package smtpsink

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"hubd/internal/certgen"
)

func send(t *testing.T, c *smtp.Client, from string, to []string, body string) error {
	t.Helper()
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	return c.SendMail(from, to, strings.NewReader(body))
}

func TestRecordsMessage(t *testing.T) {
	s := Start(t, Options{})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	body := "Subject: hi\r\n\r\n.dotted\r\nline\r\n"
	if err := send(t, c, "a@x.test", []string{"b@y.test", "c@y.test"}, body); err != nil {
		t.Fatal(err)
	}
	m := s.WaitFor(t, 1, 5*time.Second)[0]
	if m.From != "a@x.test" || strings.Join(m.To, ",") != "b@y.test,c@y.test" || m.Helo != "client.test" || m.TLS {
		t.Errorf("envelope = %v helo=%q", m, m.Helo)
	}
	if string(m.Data) != body {
		t.Errorf("data = %q, want %q", m.Data, body)
	}
}

func TestHooks(t *testing.T) {
	var gotFrom string
	s := Start(t, Options{
		Rcpt: func(addr string) error {
			if strings.HasPrefix(addr, "bad") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			}
			return nil
		},
		Data: func(from string, to []string, data []byte) error {
			gotFrom = from
			if strings.Contains(string(data), "reject-me") {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
			}
			return nil
		},
	})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@x.test", nil); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Rcpt("bad@y.test", nil); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("RCPT bad = %v, want 550", err)
	}
	if err := c.Rcpt("good@y.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "reject-me\r\n")
	if err := w.Close(); !errors.As(err, &se) || se.Code != 451 {
		t.Fatalf("DATA = %v, want 451", err)
	}
	if gotFrom != "a@x.test" {
		t.Errorf("Data hook from = %q", gotFrom)
	}
	if n := len(s.Messages()); n != 0 {
		t.Errorf("recorded %d messages after a refused DATA", n)
	}
	if err := c.SendMail("a@x.test", []string{"good@y.test"}, strings.NewReader("ok\r\n")); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitFor(t, 1, 5*time.Second)[0]; len(m.To) != 1 || m.To[0] != "good@y.test" {
		t.Errorf("to = %v", m.To)
	}
}

func TestStartTLS(t *testing.T) {
	cfg, pool, err := certgen.ServerConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := Start(t, Options{TLSConfig: cfg})
	c, err := smtp.DialStartTLS(s.Addr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := send(t, c, "a@x.test", []string{"b@y.test"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.WaitFor(t, 1, 5*time.Second)[0]; !m.TLS {
		t.Error("message not marked TLS")
	}
}

func TestMaxMessageBytesAndMailParams(t *testing.T) {
	s := Start(t, Options{MaxMessageBytes: 100, SMTPUTF8: true})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, v := c.Extension("SIZE"); !ok || v != "100" {
		t.Errorf("SIZE = %v %q", ok, v)
	}
	if ok, _ := c.Extension("SMTPUTF8"); !ok {
		t.Error("SMTPUTF8 not advertised")
	}
	err = c.SendMail("a@x.test", []string{"b@y.test"}, strings.NewReader(strings.Repeat("x", 200)+"\r\n"))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 {
		t.Fatalf("oversize = %v, want 552", err)
	}
	if err := c.Mail("a@x.test", &smtp.MailOptions{Size: 10, Body: smtp.Body8BitMIME}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@y.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "small\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := s.WaitFor(t, 1, 5*time.Second)[0]
	if m.Size != 10 || m.Body != "8BITMIME" {
		t.Errorf("params size=%d body=%q", m.Size, m.Body)
	}
}

func TestHang(t *testing.T) {
	s := Start(t, Options{Hang: true})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1)
	_, err = c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read = %v, want a timeout (no greeting)", err)
	}
}

func TestRejectGreeting(t *testing.T) {
	s := Start(t, Options{RejectGreeting: true})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "421 ") {
		t.Fatalf("greeting = %q, %v", line, err)
	}
}

// fakeTB records Fatalf instead of stopping the goroutine.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestWaitForTimesOut(t *testing.T) {
	s := Start(t, Options{})
	f := &fakeTB{TB: t}
	if got := s.WaitFor(f, 1, 50*time.Millisecond); got != nil || f.failed == "" {
		t.Fatalf("WaitFor = %v, failed=%q", got, f.failed)
	}
}

func TestFirstTransactionsFail(t *testing.T) {
	s := Start(t, Options{DropInData: 1, TempFailFirst: 1})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// First transaction: the sink hangs up in the middle of DATA.
	if err := c.SendMail("a@x.test", []string{"b@y.test"}, strings.NewReader("one\r\n")); err == nil {
		t.Fatal("dropped transaction reported success")
	}
	c.Close()
	s.WaitOpen(t, 0, 5*time.Second)

	c, err = smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var se *smtp.SMTPError
	if err := c.SendMail("a@x.test", []string{"b@y.test"}, strings.NewReader("two\r\n")); !errors.As(err, &se) || se.Code != 451 {
		t.Fatalf("second transaction = %v, want 451", err)
	}
	if err := c.SendMail("a@x.test", []string{"b@y.test"}, strings.NewReader("three\r\n")); err != nil {
		t.Fatal(err)
	}
	msgs := s.WaitFor(t, 1, 5*time.Second)
	if len(msgs) != 1 || string(msgs[0].Data) != "three\r\n" || msgs[0].Conn != 2 {
		t.Errorf("recorded %v", msgs)
	}
	if got := s.MessagesPerConnection(); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Errorf("MessagesPerConnection = %v", got)
	}
}

func TestHiddenExtensions(t *testing.T) {
	s := Start(t, Options{NoPipelining: true, No8BITMIME: true})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{"PIPELINING", "8BITMIME"} {
		if ok, _ := c.Extension(ext); ok {
			t.Errorf("%s advertised", ext)
		}
	}
	if ok, _ := c.Extension("ENHANCEDSTATUSCODES"); !ok {
		t.Error("other extensions lost")
	}
	plain := Start(t, Options{})
	c2, err := smtp.Dial(plain.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if ok, _ := c2.Extension("PIPELINING"); !ok {
		t.Error("PIPELINING missing by default")
	}
	f := &fakeTB{TB: t}
	if _, err := start(f, Options{NoPipelining: true, TLSConfig: &tls.Config{}}); err == nil {
		t.Error("NoPipelining with TLS accepted")
	}
}

func TestConnectionsCountedAndDropped(t *testing.T) {
	s := Start(t, Options{})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if err := c.SendMail("a@x.test", []string{"b@y.test"}, strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	s.WaitOpen(t, 1, 5*time.Second)
	if got := s.MessagesPerConnection(); len(got) != 1 || got[0] != 3 || s.Connections() != 1 {
		t.Errorf("MessagesPerConnection = %v, Connections = %d", got, s.Connections())
	}
	s.DropConnections()
	s.WaitOpen(t, 0, 5*time.Second)
	if err := c.Noop(); err == nil {
		t.Error("connection still usable after DropConnections")
	}
}

func TestStartSamePort(t *testing.T) {
	sinks := StartSamePort(t, Options{Addr: "127.0.0.2"}, Options{Addr: "127.0.0.3", Hang: true})
	if sinks[0].Port() != sinks[1].Port() {
		t.Fatalf("ports %d and %d", sinks[0].Port(), sinks[1].Port())
	}
	if !strings.HasPrefix(sinks[0].Addr(), "127.0.0.2:") || !strings.HasPrefix(sinks[1].Addr(), "127.0.0.3:") {
		t.Errorf("addresses %s %s", sinks[0].Addr(), sinks[1].Addr())
	}
	c, err := net.Dial("tcp", sinks[1].Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sinks[1].WaitOpen(t, 1, 5*time.Second)
	if sinks[1].Connections() != 1 || sinks[0].Connections() != 0 {
		t.Errorf("connections %d %d", sinks[0].Connections(), sinks[1].Connections())
	}
}
