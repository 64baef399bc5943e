package message

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"hubd/internal/certgen"
)

var traceTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestReceivedHeader(t *testing.T) {
	cases := []struct {
		name string
		in   Trace
		want string
	}{
		{"full", Trace{FromHelo: "client.example.org", FromIP: "192.0.2.10", FromRDNS: "mail.example.org",
			By: "mx.example.com", With: "ESMTPS", ID: "01J9ABCDEF", For: "alice@example.com",
			TLS: "TLS1.3 with cipher TLS_AES_128_GCM_SHA256", Time: traceTime},
			"Received: from client.example.org (mail.example.org [192.0.2.10])\r\n" +
				"\t(using TLS1.3 with cipher TLS_AES_128_GCM_SHA256) by mx.example.com\r\n" +
				"\twith ESMTPS id 01J9ABCDEF for <alice@example.com>;\r\n" +
				"\tFri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"short", Trace{FromHelo: "a", FromIP: "192.0.2.1", By: "mx", With: "ESMTP", Time: traceTime},
			"Received: from a ([192.0.2.1]) by mx with ESMTP;\r\n\tFri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"IPv6 and no HELO", Trace{FromIP: "2001:db8::1", By: "mx", With: "SMTP", Time: traceTime},
			"Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1]) by mx with SMTP;\r\n\tFri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"SMTPUTF8 keeps the address", Trace{FromHelo: "a", FromIP: "192.0.2.1", By: "mx", With: "UTF8SMTPS",
			For: "jöran@rëmote.test", UTF8: true, Time: traceTime},
			"Received: from a ([192.0.2.1]) by mx with UTF8SMTPS for <jöran@rëmote.test>;\r\n\tFri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"UTF-8 without SMTPUTF8", Trace{By: "mx", For: "jöran@x", Time: traceTime},
			"Received: by mx for <j??ran@x>; Fri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"SMTPUTF8, hostile address", Trace{By: "mx", For: "a>\u0085bé@x", UTF8: true, Time: traceTime},
			"Received: by mx for <a??bé@x>; Fri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"SMTPUTF8, invalid UTF-8", Trace{By: "mx", For: "aé\xff@x", UTF8: true, Time: traceTime},
			"Received: by mx for <a???@x>; Fri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"only by", Trace{By: "mx", Time: traceTime},
			"Received: by mx; Fri, 02 Jan 2026 03:04:05 +0000\r\n"},
		{"hostile HELO", Trace{FromHelo: "evil\r\nBcc: x@y (a) <b>; c", FromIP: "[192.0.2.1]", By: "mx", Time: traceTime},
			"Received: from evil??Bcc:?x@y??a???b???c ([192.0.2.1]) by mx;\r\n\tFri, 02 Jan 2026 03:04:05 +0000\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ReceivedHeader(c.in)
			if got != c.want {
				t.Errorf("got\n%q\nwant\n%q", got, c.want)
			}
			checkFolded(t, got)
		})
	}
}

// checkFolded checks the shape every Received: field must have: CRLF at the
// end, lines of at most 78 columns (a tab counted as 8) unless one word is
// longer, continuation lines starting with WSP, and a date after the last ";".
func checkFolded(t *testing.T, f string) {
	t.Helper()
	if !strings.HasPrefix(f, "Received: ") || !strings.HasSuffix(f, "\r\n") || hasBareNewline(f) {
		t.Fatalf("malformed field %q", f)
	}
	lines := strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n")
	for i, l := range lines {
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("line %d does not start with WSP: %q", i, l)
		}
		width := len(strings.ReplaceAll(l, "\t", "        "))
		if width > foldWidth && strings.Contains(strings.TrimSpace(l), " ") {
			t.Errorf("line %d is %d columns: %q", i, width, l)
		}
	}
	semi := strings.LastIndex(f, ";")
	if semi < 0 {
		t.Fatalf("no ';' in %q", f)
	}
	date := strings.TrimSpace(strings.ReplaceAll(f[semi+1:], "\r\n", ""))
	if _, err := time.Parse(time.RFC1123Z, date); err != nil {
		t.Errorf("date %q: %v", date, err)
	}
	if CountReceived([]byte(f)) != 1 {
		t.Errorf("CountReceived of the field = %d", CountReceived([]byte(f)))
	}
}

func TestReceivedHeaderLongValues(t *testing.T) {
	f := ReceivedHeader(Trace{
		FromHelo: strings.Repeat("h", 400), FromIP: "192.0.2.1", FromRDNS: strings.Repeat("r", 100),
		By: "mx.example.com", With: "ESMTPSA", ID: "x", For: strings.Repeat("a", 70) + "@example.com",
		TLS: "TLS1.2 with cipher " + strings.Repeat("C", 90), Time: traceTime,
	})
	checkFolded(t, f)
	for _, l := range strings.Split(f, "\r\n") {
		if len(l) > 998 {
			t.Errorf("line of %d octets", len(l))
		}
	}
	if strings.Contains(f, strings.Repeat("h", 256)) {
		t.Errorf("HELO not truncated to 255 octets")
	}
	if now := ReceivedHeader(Trace{By: "mx"}); !strings.Contains(now, time.Now().Format("2006")) {
		t.Errorf("zero Time did not mean now: %q", now)
	}
}

// TestTLSDetails runs a real TLS handshake over loopback and describes it.
func TestTLSDetails(t *testing.T) {
	if TLSDetails(nil) != "" || TLSDetails(&tls.ConnectionState{}) != "" {
		t.Error("no handshake should give \"\"")
	}
	srvConf, pool, err := certgen.ServerConfig("localhost")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		done <- err
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	cs := conn.ConnectionState()
	conn.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := TLSDetails(&cs)
	if !strings.HasPrefix(got, "TLS1.3 with cipher TLS_") {
		t.Errorf("TLSDetails = %q", got)
	}
	checkFolded(t, ReceivedHeader(Trace{FromHelo: "c", FromIP: "127.0.0.1", By: "mx", With: "ESMTPS", TLS: got, Time: traceTime}))
}

// TestCleanTokens: a value that needs nothing replaced comes back as it
// is; anything that could end a token, a comment or an address becomes
// "?", and so do controls and non-ASCII bytes.
func TestCleanTokens(t *testing.T) {
	for in, want := range map[string]string{
		"mail.example.com": "mail.example.com",
		"a b":              "a?b",
		"x(y)<z>;\\\"":     "x?y??z????",
		"caf\xc3\xa9":      "caf??",
		"tab\there\r\n":    "tab?here??",
		"":                 "",
		"[192.0.2.1]":      "[192.0.2.1]",
		"user@example.com": "user@example.com",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := cleanAddress("jos\u00e9@b\u00fccher.example", true); got != "jos\u00e9@b\u00fccher.example" {
		t.Errorf("cleanAddress kept %q", got)
	}
	if got := cleanAddress("a b@\u0085.example", true); got != "a?b@?.example" {
		t.Errorf("cleanAddress = %q, want a?b@?.example", got)
	}
}
