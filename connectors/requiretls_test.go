package connectors

import (
	"strings"
	"testing"
)

// TestREQUIRETLSReceive: REQUIRETLS (RFC 8689 §4) is advertised only after
// STARTTLS, refused on a clear-text session with 530 5.7.10, and accepted
// over TLS into Envelope.RequireTLS, which the SMTP deliverer then honours.
func TestREQUIRETLSReceive(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	if ehlo := c.expect("EHLO client.test", "250-"); strings.Contains(ehlo, "REQUIRETLS") {
		t.Errorf("REQUIRETLS offered before TLS:\n%s", ehlo)
	}
	c.expect("MAIL FROM:<x@remote.test> REQUIRETLS", "530 5.7.10")
	c.startTLS(h.pool)
	if ehlo := c.expect("EHLO client.test", "250-"); !strings.Contains(ehlo, "REQUIRETLS") {
		t.Errorf("REQUIRETLS not offered over TLS:\n%s", ehlo)
	}
	c.expect("MAIL FROM:<x@remote.test> REQUIRETLS", "250")
	c.expect("RCPT TO:<alice@example.com>", "250")
	c.expect("DATA", "354")
	c.expect("Subject: x\r\n\r\nhi\r\n.", "250")
	if env, _ := h.sub.last(t); !env.RequireTLS {
		t.Error("Envelope.RequireTLS not set")
	}
}
