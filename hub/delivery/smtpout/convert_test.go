package smtpout

import (
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"

	"hubd/hub/delivery"
	"hubd/internal/smtpsink"
)

// TestEightBitConverted: RFC 6152 §3. 8-bit content to a server without
// 8BITMIME is converted (here a non-MIME message: declared unknown-8bit,
// quoted-printable, RFC 1428), whatever the client declared; it decodes to
// the original, SIZE= is the size sent, and a retry sends the same bytes.
func TestEightBitConverted(t *testing.T) {
	seven := smtpsink.Start(t, smtpsink.Options{No8BITMIME: true})
	const body = "caf\xe9 cr\xe8me\r\n"
	latin := message("Subject: x\r\n\r\n" + body)
	for i, declared := range []string{"", "8BITMIME", "7BIT"} {
		latin.Envelope.Body = declared
		res := deliver(t, testOptions(), smartHop(seven.Addr()), latin, rcpts("a@remote.test", "b@remote.test"))
		for _, r := range res {
			expect(t, r, delivery.Delivered, 250, "2.0.0")
		}
		m := seven.WaitFor(t, i+1, waitLong)[i]
		if m.Body != "" {
			t.Errorf("BODY=%q to a server without 8BITMIME", m.Body)
		}
		want := "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n" +
			"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 cr=E8me\r\n"
		if string(m.Data) != want || m.Size != int64(len(want)) {
			t.Errorf("BODY=%q: sent SIZE=%d\n%q\nwant\n%q", declared, m.Size, m.Data, want)
		}
		_, qp, _ := strings.Cut(string(m.Data), "\r\n\r\n")
		if dec, err := decodeQP(qp); err != nil || dec != body {
			t.Errorf("decodes to %q, %v", dec, err)
		}
	}

	// Declared 8BITMIME, but all 7-bit: goes to the 7-bit server undeclared
	// and unchanged.
	seven2 := smtpsink.Start(t, smtpsink.Options{No8BITMIME: true})
	ascii := message("Subject: x\r\n\r\nplain\r\n")
	ascii.Envelope.Body = "8BITMIME"
	expect(t, deliver(t, testOptions(), smartHop(seven2.Addr()), ascii, rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	if m := seven2.WaitFor(t, 1, waitLong)[0]; m.Body != "" || string(m.Data) != "Subject: x\r\n\r\nplain\r\n" {
		t.Errorf("BODY=%q data %q", m.Body, m.Data)
	}

	// Undeclared 8-bit content goes unchanged, declared, where the server
	// has 8BITMIME.
	eight := smtpsink.Start(t, smtpsink.Options{})
	latin.Envelope.Body = ""
	expect(t, deliver(t, testOptions(), smartHop(eight.Addr()), latin, rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	if m := eight.WaitFor(t, 1, waitLong)[0]; m.Body != "8BITMIME" || string(m.Data) != "Subject: x\r\n\r\n"+body {
		t.Errorf("BODY=%q data %q", m.Body, m.Data)
	}
}

// decodeQP decodes a quoted-printable body.
func decodeQP(s string) (string, error) {
	b, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(s)))
	return string(b), err
}

// TestSignedNotConverted: a multipart/signed (RFC 1847) or DKIM-signed
// message with 8-bit content is never converted: Failed 554 5.6.3 for a
// server without 8BITMIME, and so is an 8-bit header, which is never
// converted.
func TestSignedNotConverted(t *testing.T) {
	seven := smtpsink.Start(t, smtpsink.Options{No8BITMIME: true})
	for name, tc := range map[string]struct{ msg, why string }{
		"multipart/signed": {"MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=S\r\n\r\n" +
			"--S\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n" +
			"--S\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--S--\r\n", "multipart/signed"},
		"DKIM":   {"DKIM-Signature: v=1; d=example.org\r\nSubject: x\r\n\r\ncaf\xe9\r\n", "DKIM-Signature"},
		"header": {"Subject: caf\xe9\r\n\r\nplain\r\n", "header section"},
	} {
		res := deliver(t, testOptions(), smartHop(seven.Addr()), message(tc.msg), rcpts("a@remote.test", "b@remote.test"))
		for _, r := range res {
			expect(t, r, delivery.Failed, 554, "5.6.3")
			if r.Connection || !strings.Contains(r.Text, tc.why) || !strings.Contains(r.Text, "lacks 8BITMIME") {
				t.Errorf("%s: %+v", name, r)
			}
		}
	}
	if n := len(seven.Messages()); n != 0 {
		t.Errorf("the 7-bit server got %d messages", n)
	}
}

// TestLongLinesNeverSent: RFC 5321 §4.5.3.1.6. A text part with a line over
// 998 octets is re-encoded quoted-printable even for a server with
// 8BITMIME; nothing sent has a longer line.
func TestLongLinesNeverSent(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	long := strings.Repeat("0123456789", 150) // 1500 octets
	msg := message("Subject: long\r\nX-Long: " + strings.Repeat("ab", 600) + "\r\n\r\n" + long + "\r\nGr\xfc\xdfe\r\n")
	expect(t, deliver(t, testOptions(), smartHop(sink.Addr()), msg, rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	m := sink.WaitFor(t, 1, waitLong)[0]
	for i, line := range strings.Split(string(m.Data), "\r\n") {
		if len(line) > 998 {
			t.Errorf("line %d has %d octets", i+1, len(line))
		}
	}
	if !strings.Contains(string(m.Data), "Content-Transfer-Encoding: quoted-printable") || m.Body != "" {
		t.Errorf("BODY=%q\n%s", m.Body, m.Data)
	}
	_, qp, _ := strings.Cut(string(m.Data), "\r\n\r\n")
	if dec, _ := decodeQP(qp); dec != long+"\r\nGr\xfc\xdfe\r\n" {
		t.Errorf("decodes to %q", dec)
	}
}
