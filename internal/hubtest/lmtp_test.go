package hubtest

import (
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hubd/hub/tracking"
)

// lmtpSink is a real LMTP server (go-smtp in LMTP mode, RFC 2033) standing
// in for Dovecot; it records each message with its recipients.
type lmtpSink struct {
	addr string
	mu   sync.Mutex
	got  []string // "rcpt: body"
}

func startLMTPSink(t *testing.T) *lmtpSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &lmtpSink{addr: l.Addr().String()}
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) {
		return &lmtpSession{sink: ls}, nil
	}))
	srv.LMTP = true
	srv.Domain = "lmtp.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return ls
}

func (ls *lmtpSink) messages() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]string(nil), ls.got...)
}

type lmtpSession struct {
	sink  *lmtpSink
	rcpts []string
}

func (s *lmtpSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *lmtpSession) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *lmtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.sink.mu.Lock()
	for _, rc := range s.rcpts {
		s.sink.got = append(s.sink.got, rc+": "+string(b))
	}
	s.sink.mu.Unlock()
	return nil
}
func (s *lmtpSession) Reset()        { s.rcpts = nil }
func (s *lmtpSession) Logout() error { return nil }

// TestLMTPDeliveryAndTracking: a mailbox with `lmtp` is delivered to the LMTP
// server through the whole hub, a list expands to it and to a Maildir, and
// the message tracking log has the story of the message: RECEIVE, EXPAND,
// ROUTE and DELIVER for each recipient.
func TestLMTPDeliveryAndTracking(t *testing.T) {
	ls := startLMTPSink(t)
	h := Start(t, fmt.Sprintf(`
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
mailbox "dove@example.test" { lmtp = %q }
mailbox "md@example.test"   { maildir = "{{dir}}/mail/md" }
distribution_list "both@example.test" { members = ["dove@example.test", "md@example.test"] }
receive_connector "in" { bind = ["127.0.0.1:0"] }
`, ls.addr), Options{})
	send(t, h.Addr(t, "in"), "someone@remote.test", "both@example.test")
	WaitMaildir(t, h.Dir+"/mail/md", 1, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(ls.messages()) == 0 && time.Now().Before(deadline) {
		<-time.After(10 * time.Millisecond) // poll interval under the deadline
	}
	got := ls.messages()
	if len(got) != 1 || !strings.HasPrefix(got[0], "dove@example.test: ") || !strings.Contains(got[0], "hello") {
		t.Fatalf("LMTP server got %q", got)
	}
	if err := h.Transport.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	events := map[tracking.EventID][]tracking.Event{}
	if err := tracking.Search(h.Dir+"/log/tracking", tracking.Filter{}, func(e tracking.Event) bool {
		events[e.Event] = append(events[e.Event], e)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if r := events[tracking.Receive]; len(r) != 1 || r[0].Sender != "someone@remote.test" || r[0].Connector != "in" ||
		r[0].ClientAddr == "" || r[0].Size == 0 {
		t.Errorf("RECEIVE %+v", r)
	}
	if len(events[tracking.Expand]) != 2 || events[tracking.Expand][0].RelatedRecipient != "both@example.test" {
		t.Errorf("EXPAND %+v", events[tracking.Expand])
	}
	delivered := map[string]string{}
	for _, e := range events[tracking.Deliver] {
		delivered[e.Recipient] = e.NextHop
	}
	if delivered["dove@example.test"] != "lmtp:"+ls.addr || delivered["md@example.test"] != "maildir" {
		t.Errorf("DELIVER %+v", events[tracking.Deliver])
	}
	if len(events[tracking.Route]) != 2 {
		t.Errorf("ROUTE %+v", events[tracking.Route])
	}
}
