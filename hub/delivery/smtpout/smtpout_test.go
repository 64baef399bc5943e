package smtpout

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/internal/certgen"
	"hubd/internal/smtpsink"
	"hubd/policy"
)

const waitLong = 5 * time.Second

func message(body string) delivery.Message {
	return delivery.Message{
		ID:       "Q1",
		Envelope: &hub.Envelope{From: "sender@hub.test", ReceivedAt: time.Now()},
		Size:     int64(len(body)),
		Open:     func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
	}
}

func rcpts(addrs ...string) []delivery.Recipient {
	out := make([]delivery.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = delivery.Recipient{Address: a, Key: "Q1." + strconv.Itoa(i)}
	}
	return out
}

// testOptions are short timeouts so that failure cases end quickly.
func testOptions() Options {
	return Options{
		Hostname:        "hub.test",
		DialTimeout:     2 * time.Second,
		CommandTimeout:  2 * time.Second,
		DataInitTimeout: 2 * time.Second,
		DataTimeout:     2 * time.Second,
		FinalTimeout:    2 * time.Second,
	}
}

func smartHop(hosts ...string) delivery.NextHop {
	return delivery.NextHop{Kind: delivery.KindSMTP, Connector: "test", SmartHosts: strings.Join(hosts, ","), FQDN: "out.hub.test"}
}

func deliver(t *testing.T, opts Options, hop delivery.NextHop, msg delivery.Message, rc []delivery.Recipient) []delivery.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := New(opts)
	defer d.Close()
	res := d.Deliver(ctx, hop, msg, rc)
	if len(res) != len(rc) {
		t.Fatalf("%d results for %d recipients", len(res), len(rc))
	}
	return res
}

func expect(t *testing.T, r delivery.Result, st delivery.Status, code int, enhanced string) {
	t.Helper()
	if r.Status != st || r.Code != code || r.Enhanced != enhanced {
		t.Errorf("result = %v %d %s %q (remote %q), want %v %d %s", r.Status, r.Code, r.Enhanced, r.Text, r.RemoteMTA, st, code, enhanced)
	}
}

func smtpErr(code int, e1, e2, e3 int, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{e1, e2, e3}, Message: text}
}

// deadAddr is a loopback address with nothing listening.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestPlainDeliveryTwoRecipients(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	body := "Subject: test\r\n\r\nhello\r\n"
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message(body), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		expect(t, r, delivery.Delivered, 250, "2.0.0")
		if r.RemoteMTA != "127.0.0.1" {
			t.Errorf("RemoteMTA = %q", r.RemoteMTA)
		}
	}
	m := sink.WaitFor(t, 1, waitLong)[0]
	if m.From != "sender@hub.test" || strings.Join(m.To, ",") != "a@remote.test,b@remote.test" {
		t.Errorf("envelope %v", m)
	}
	if string(m.Data) != body || m.Helo != "out.hub.test" || m.TLS || m.Size != int64(len(body)) {
		t.Errorf("data %q helo %q tls %v size %d", m.Data, m.Helo, m.TLS, m.Size)
	}
}

func TestRecipientRefusedOthersDelivered(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(addr string) error {
		if addr == "nobody@remote.test" {
			return smtpErr(550, 5, 1, 1, "no such user")
		}
		return nil
	}})
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message("x\r\n"), rcpts("nobody@remote.test", "ok@remote.test"))
	expect(t, res[0], delivery.Failed, 550, "5.1.1")
	if !strings.Contains(res[0].Text, "no such user") || res[0].RemoteMTA != "127.0.0.1" {
		t.Errorf("failed result %+v", res[0])
	}
	expect(t, res[1], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; len(m.To) != 1 || m.To[0] != "ok@remote.test" {
		t.Errorf("sink got %v", m)
	}
}

func TestRcptTemporaryNoData(t *testing.T) {
	sawData := false
	sink := smtpsink.Start(t, smtpsink.Options{
		Rcpt: func(string) error { return smtpErr(451, 4, 2, 1, "mailbox busy") },
		Data: func(string, []string, []byte) error { sawData = true; return nil },
	})
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message("x\r\n"), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		expect(t, r, delivery.Deferred, 451, "4.2.1")
	}
	if sawData || len(sink.Messages()) != 0 {
		t.Error("DATA was sent although no recipient was accepted")
	}
}

func TestDataRefusalAppliesToAccepted(t *testing.T) {
	for _, c := range []struct {
		err  *smtp.SMTPError
		st   delivery.Status
		code int
		enh  string
	}{
		{smtpErr(451, 4, 3, 0, "queue full"), delivery.Deferred, 451, "4.3.0"},
		{smtpErr(554, 5, 7, 1, "spam"), delivery.Failed, 554, "5.7.1"},
	} {
		sink := smtpsink.Start(t, smtpsink.Options{
			Rcpt: func(addr string) error {
				if addr == "bad@remote.test" {
					return smtpErr(550, 5, 1, 1, "unknown")
				}
				return nil
			},
			Data: func(string, []string, []byte) error { return c.err },
		})
		res := deliver(t, testOptions(), smartHop(sink.Addr()), message("x\r\n"), rcpts("a@remote.test", "bad@remote.test", "b@remote.test"))
		expect(t, res[0], c.st, c.code, c.enh)
		expect(t, res[1], delivery.Failed, 550, "5.1.1")
		expect(t, res[2], c.st, c.code, c.enh)
	}
}

func TestDotStuffingRoundTrip(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	body := "Subject: dots\r\n\r\n.foo\r\n.\r\n..two\r\nbare\nlf\r\n.\r\nlast line without CRLF"
	want := "Subject: dots\r\n\r\n.foo\r\n.\r\n..two\r\nbare\r\nlf\r\n.\r\nlast line without CRLF\r\n"
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message(body), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if got := string(sink.WaitFor(t, 1, waitLong)[0].Data); got != want {
		t.Errorf("received %q\nwant     %q", got, want)
	}
}

func TestOpportunisticSTARTTLS(t *testing.T) {
	cfg, _, err := certgen.ServerConfig("sink.test")
	if err != nil {
		t.Fatal(err)
	}
	sink := smtpsink.Start(t, smtpsink.Options{TLSConfig: cfg})
	// The certificate is self-signed and for another name: opportunistic TLS
	// uses it anyway (RFC 7435).
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	m := sink.WaitFor(t, 1, waitLong)[0]
	if !m.TLS || m.Helo != "out.hub.test" {
		t.Errorf("tls=%v helo=%q, want TLS and EHLO repeated after STARTTLS", m.TLS, m.Helo)
	}

	// TLS "none" never starts TLS even when offered.
	hop := smartHop(sink.Addr())
	hop.TLS = policy.SendTLSNone
	deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	if m := sink.WaitFor(t, 2, waitLong)[1]; m.TLS {
		t.Error("TLS used with tls = none")
	}
}

func TestOpportunisticHandshakeFailureRetriesPlain(t *testing.T) {
	// No certificate: the server's handshake fails after it said 220.
	sink := smtpsink.Start(t, smtpsink.Options{TLSConfig: &tls.Config{}})
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; m.TLS {
		t.Error("message marked TLS after a failed handshake")
	}
}

func TestRequiredTLS(t *testing.T) {
	cfg, pool, err := certgen.ServerConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tlsSink := smtpsink.Start(t, smtpsink.Options{TLSConfig: cfg})
	plainSink := smtpsink.Start(t, smtpsink.Options{})
	opts := testOptions()
	opts.RootCAs = pool

	hop := smartHop(plainSink.Addr())
	hop.TLS = policy.SendTLSRequired
	res := deliver(t, opts, hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.5")
	if !strings.Contains(res[0].Text, "TLS required but not offered") || len(plainSink.Messages()) != 0 {
		t.Errorf("result %+v, sink %d messages", res[0], len(plainSink.Messages()))
	}

	hop.SmartHosts = tlsSink.Addr()
	res = deliver(t, opts, hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := tlsSink.WaitFor(t, 1, waitLong)[0]; !m.TLS {
		t.Error("not TLS")
	}

	// Required TLS verifies: an unknown CA is a deferral, not plaintext.
	opts.RootCAs = nil
	res = deliver(t, opts, hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.5")
	if n := len(tlsSink.Messages()); n != 1 {
		t.Errorf("sink has %d messages after an unverifiable certificate", n)
	}
}

func TestFirstSmartHostDown(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	busy := smtpsink.Start(t, smtpsink.Options{RejectGreeting: true})
	hop := smartHop(deadAddr(t), busy.Addr(), "[127.0.0.1]:"+strconv.Itoa(sink.Port()))
	res := deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	sink.WaitFor(t, 1, waitLong)
}

func TestAllSmartHostsDown(t *testing.T) {
	busy := smtpsink.Start(t, smtpsink.Options{RejectGreeting: true})
	res := deliver(t, testOptions(), smartHop(deadAddr(t), busy.Addr()), message("x\r\n"), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		// The last host's reason: its 421 greeting.
		expect(t, r, delivery.Deferred, 421, "4.3.2")
	}
	res = deliver(t, testOptions(), smartHop(deadAddr(t)), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.4.1")
	if !strings.Contains(res[0].Text, "connect") {
		t.Errorf("text %q", res[0].Text)
	}
}

func TestGreetingTimeout(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{Hang: true})
	opts := testOptions()
	opts.CommandTimeout = 300 * time.Millisecond
	start := time.Now()
	res := deliver(t, opts, smartHop(sink.Addr()), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.4.1")
	if !strings.Contains(res[0].Text, "timeout") || !res[0].Connection {
		t.Errorf("text %q", res[0].Text)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v with a 300ms greeting timeout", el)
	}
}

func TestContextCancelAbandons(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{Hang: true})
	opts := testOptions()
	opts.CommandTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	d := New(opts)
	defer d.Close()
	res := d.Deliver(ctx, smartHop(sink.Addr()), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.4.2")
	if !strings.Contains(res[0].Text, "abandoned") || time.Since(start) > 10*time.Second {
		t.Errorf("text %q after %v", res[0].Text, time.Since(start))
	}
}

func TestSizeExceeded(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{MaxMessageBytes: 100})
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message(strings.Repeat("x", 150)+"\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Failed, 552, "5.3.4")
	if len(sink.Messages()) != 0 {
		t.Error("oversized message sent")
	}
}

func TestSMTPUTF8(t *testing.T) {
	msg := message("Subject: grüße\r\n\r\nx\r\n")
	msg.Envelope.SMTPUTF8 = true
	msg.Envelope.From = "jörg@hub.test"

	plain := smtpsink.Start(t, smtpsink.Options{})
	res := deliver(t, testOptions(), smartHop(plain.Addr()), msg, rcpts("zoë@remote.test"))
	expect(t, res[0], delivery.Failed, 553, "5.6.7")
	if !strings.Contains(res[0].Text, "non-ASCII sender address <jörg@hub.test>") {
		t.Errorf("text %q does not name the address", res[0].Text)
	}

	// ASCII addresses and a UTF-8 header: the reply (and so the DSN)
	// names the header, not the addresses.
	ascii := message("Subject: grüße\r\n\r\nx\r\n")
	ascii.Envelope.SMTPUTF8 = true
	res = deliver(t, testOptions(), smartHop(plain.Addr()), ascii, rcpts("zoe@remote.test"))
	expect(t, res[0], delivery.Failed, 553, "5.6.7")
	if !strings.Contains(res[0].Text, "non-ASCII header fields (its addresses are ASCII)") || strings.Contains(res[0].Text, "address <") {
		t.Errorf("text %q does not name the header", res[0].Text)
	}

	utf8 := smtpsink.Start(t, smtpsink.Options{SMTPUTF8: true})
	res = deliver(t, testOptions(), smartHop(utf8.Addr()), msg, rcpts("zoë@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := utf8.WaitFor(t, 1, waitLong)[0]; !m.UTF8 || m.From != "jörg@hub.test" || m.To[0] != "zoë@remote.test" {
		t.Errorf("got %v utf8=%v", m, m.UTF8)
	}
}

func TestEightBitMIME(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	msg := message("x\r\n")
	msg.Envelope.Body = "8BITMIME"
	deliver(t, testOptions(), smartHop(sink.Addr()), msg, rcpts("a@remote.test"))
	if m := sink.WaitFor(t, 1, waitLong)[0]; m.Body != "8BITMIME" {
		t.Errorf("BODY = %q", m.Body)
	}
}

func TestMailRefused(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{Mail: func(string) error { return smtpErr(550, 5, 7, 1, "sender blocked") }})
	res := deliver(t, testOptions(), smartHop(sink.Addr()), message("x\r\n"), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		expect(t, r, delivery.Failed, 550, "5.7.1")
	}
}

// TestSMTPUTF8NotNeeded: a client that asked for SMTPUTF8 for an all-ASCII
// message (Go's net/smtp always does when offered) does not make the message
// undeliverable to a next hop without SMTPUTF8.
func TestSMTPUTF8NotNeeded(t *testing.T) {
	msg := message("Subject: plain ascii\r\n\r\nx\r\n")
	msg.Envelope.SMTPUTF8 = true
	plain := smtpsink.Start(t, smtpsink.Options{})
	res := deliver(t, testOptions(), smartHop(plain.Addr()), msg, rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := plain.WaitFor(t, 1, waitLong)[0]; m.UTF8 {
		t.Error("SMTPUTF8 sent to a server that does not offer it")
	}
}
