package hubtest

import (
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"hubd/internal/smtpsink"
)

// TestSMTPUTF8HeaderDSN: a message with ASCII addresses and a UTF-8
// Subject, sent with SMTPUTF8, cannot go to a next hop without SMTPUTF8
// (RFC 6531 §3.2); the DSN says the header fields needed it, not the
// addresses.
func TestSMTPUTF8HeaderDSN(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	h := Start(t, fmt.Sprintf(sinkHub, sink.Addr()), Options{})
	// Go's net/smtp asks for SMTPUTF8 whenever the server offers it.
	msg := "From: <sender@example.test>\r\nTo: <a@remote.test>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nhello\r\n"
	if err := smtp.SendMail(h.Addr(t, "apps"), nil, "sender@example.test", []string{"a@remote.test"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	dsn := WaitMaildir(t, h.Dir+"/mail/sender", 1, 20*time.Second)[0]
	flat := strings.Join(strings.Fields(dsn), " ")
	for _, want := range []string{"Status: 5.6.7", "non-ASCII header fields (its addresses are ASCII)", "internationalized mail (SMTPUTF8)"} {
		if !strings.Contains(flat, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(flat, "non-ASCII addresses") {
		t.Errorf("DSN blames the addresses:\n%s", dsn)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Errorf("sink got %d messages", n)
	}
}
