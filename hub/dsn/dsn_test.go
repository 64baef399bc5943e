package dsn

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"hubd/hub"
)

var (
	arrived = time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
	now     = arrived.Add(50 * time.Minute)
)

const origHeader = "Received: from client.remote.test (client.remote.test [192.0.2.7])\r\n" +
	"\tby hub.example.com with ESMTPS id Q1; Mon, 2 Mar 2026 09:15:00 +0000\r\n" +
	"From: Sender <sender@remote.test>\r\n" +
	"To: sales@example.com\r\n" +
	"Subject: Quarterly\r\n figures\r\n" +
	"Message-ID: <orig.1@remote.test>\r\n" +
	"Date: Mon, 2 Mar 2026 09:14:58 +0000\r\n"

const origMessage = origHeader + "\r\nHello,\r\nthe figures are attached.\r\n"

func envelope() *hub.Envelope {
	return &hub.Envelope{
		From:       "sender@remote.test",
		Recipients: []hub.Recipient{{Address: "sales@example.com"}},
		Body:       "7BIT",
		ReceivedAt: arrived,
		Connector:  "internet",
		ClientAddr: "192.0.2.7:41000",
		ClientHelo: "client.remote.test",
		MessageID:  "<orig.1@remote.test>",
	}
}

func report(rcpts ...Recipient) Report {
	return Report{
		ReportingMTA: "hub.example.com",
		Envelope:     envelope(),
		QueueID:      "Q1",
		Recipients:   rcpts,
		Original:     strings.NewReader(origMessage),
		Now:          now,
	}
}

var userUnknown = Recipient{
	FinalRecipient:    "bob@example.net",
	EnvelopeRecipient: "bob@example.net",
	Action:            Failed,
	Status:            "5.1.1",
	DiagnosticCode:    "550 5.1.1 User unknown",
	RemoteMTA:         "mx.example.net",
	LastAttempt:       now.Add(-time.Minute),
}

// build runs Build and parses its result, failing the test on any error.
func build(t *testing.T, r Report) (hub.Envelope, *parsedDSN) {
	t.Helper()
	env, body, err := Build(r)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	d, err := parseDSN(body)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return env, d
}

func wantField(t *testing.T, h map[string][]string, name, want string) {
	t.Helper()
	got := strings.Join(h[name], "|")
	if got != want {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

func TestBuildFailed(t *testing.T) {
	env, d := build(t, report(userUnknown))

	if env.From != "" || len(env.Recipients) != 1 || env.Recipients[0].Address != "sender@remote.test" ||
		env.Connector != "hub" || env.Body != "7BIT" || env.SMTPUTF8 ||
		!slices.Equal(env.Recipients[0].Notify, []string{"NEVER"}) || env.ReceivedAt != now {
		t.Errorf("envelope = %+v", env)
	}
	h := d.header
	wantField(t, h, "From", "Mail Delivery System <MAILER-DAEMON@hub.example.com>")
	wantField(t, h, "To", "<sender@remote.test>")
	wantField(t, h, "Auto-Submitted", "auto-replied")
	wantField(t, h, "In-Reply-To", "<orig.1@remote.test>")
	wantField(t, h, "References", "<orig.1@remote.test>")
	wantField(t, h, "Mime-Version", "1.0")
	wantField(t, h, "Message-Id", env.MessageID)
	if !strings.HasPrefix(env.MessageID, "<dsn.Q1.") || !strings.HasSuffix(env.MessageID, "@hub.example.com>") {
		t.Errorf("Message-ID = %q", env.MessageID)
	}
	if got := d.decodedSubject(); got != "Undeliverable: Quarterly figures" {
		t.Errorf("Subject = %q", got)
	}
	if date, err := h.Date(); err != nil || !date.Equal(now) {
		t.Errorf("Date = %v, %v", date, err)
	}

	wantField(t, d.perMessage, "Reporting-Mta", "dns; hub.example.com")
	wantField(t, d.perMessage, "Received-From-Mta", "dns; client.remote.test ([192.0.2.7])")
	wantField(t, d.perMessage, "Arrival-Date", "Mon, 02 Mar 2026 09:15:00 +0000")
	wantField(t, d.perMessage, "X-Hubd-Queue-Id", "Q1")
	wantField(t, d.perMessage, "Original-Envelope-Id", "")
	if len(d.perRcpt) != 1 {
		t.Fatalf("%d recipient blocks", len(d.perRcpt))
	}
	r := d.perRcpt[0]
	wantField(t, r, "Original-Recipient", "")
	wantField(t, r, "Final-Recipient", "rfc822;bob@example.net")
	wantField(t, r, "Action", "failed")
	wantField(t, r, "Status", "5.1.1")
	wantField(t, r, "Remote-Mta", "dns; mx.example.net")
	wantField(t, r, "Diagnostic-Code", "smtp; 550 5.1.1 User unknown")
	wantField(t, r, "Last-Attempt-Date", "Mon, 02 Mar 2026 10:04:00 +0000")
	wantField(t, r, "Will-Retry-Until", "")

	if mt := d.parts[1].mediaType(); mt != "message/delivery-status" {
		t.Errorf("part 2 is %s", mt)
	}
	// RET absent, small message: the whole original comes back verbatim.
	if mt := d.parts[2].mediaType(); mt != "message/rfc822" {
		t.Errorf("part 3 is %s", mt)
	}
	if string(d.parts[2].body) != origMessage {
		t.Errorf("returned original differs:\n%q", d.parts[2].body)
	}
	text := d.text()
	for _, want := range []string{"bob@example.net", "550 5.1.1 User unknown", "no such mailbox", "mx.example.net", "Q1"} {
		if !strings.Contains(text, want) {
			t.Errorf("text part lacks %q:\n%s", want, text)
		}
	}
	if ct := d.parts[0].header.Get("Content-Type"); ct != "text/plain; charset=us-ascii" {
		t.Errorf("text part Content-Type %q", ct)
	}
}

func TestBuildDelayed(t *testing.T) {
	rc := Recipient{
		FinalRecipient: "bob@example.net", EnvelopeRecipient: "bob@example.net",
		Action: Delayed, Status: "4.4.1", DiagnosticCode: "connection refused",
		RemoteMTA: "192.0.2.25", LastAttempt: now, WillRetryUntil: arrived.Add(48 * time.Hour),
	}
	r := report(rc)
	r.Envelope.DSNRet = "FULL" // delay notices return headers all the same
	env, d := build(t, r)
	if env.Body != "7BIT" {
		t.Errorf("Body = %q", env.Body)
	}
	if got := d.decodedSubject(); got != "Delivery delayed: Quarterly figures" {
		t.Errorf("Subject = %q", got)
	}
	p := d.perRcpt[0]
	wantField(t, p, "Action", "delayed")
	wantField(t, p, "Status", "4.4.1")
	wantField(t, p, "Remote-Mta", "dns; [192.0.2.25]")
	wantField(t, p, "Diagnostic-Code", "X-Hubd; connection refused")
	wantField(t, p, "Will-Retry-Until", "Wed, 04 Mar 2026 09:15:00 +0000")
	if mt := d.parts[2].mediaType(); mt != "text/rfc822-headers" {
		t.Errorf("part 3 is %s", mt)
	}
	if string(d.parts[2].body) != origHeader {
		t.Errorf("returned header differs:\n%q", d.parts[2].body)
	}
	if !strings.Contains(d.text(), "Trying until:   Wed, 04 Mar 2026 09:15:00 +0000") {
		t.Errorf("text lacks the retry horizon:\n%s", d.text())
	}
}

func TestBuildExpiredIsFailed(t *testing.T) {
	rc := Recipient{
		FinalRecipient: "bob@example.net", Action: Failed, Status: "4.4.7",
		DiagnosticCode: "451 4.7.1 Try again later", RemoteMTA: "mx.example.net",
		WillRetryUntil: now, // ignored for failures
	}
	_, d := build(t, report(rc))
	if got := d.decodedSubject(); !strings.HasPrefix(got, "Undeliverable: ") {
		t.Errorf("Subject = %q", got)
	}
	p := d.perRcpt[0]
	wantField(t, p, "Action", "failed")
	wantField(t, p, "Status", "4.4.7")
	wantField(t, p, "Will-Retry-Until", "")
	if !strings.Contains(d.text(), "waited in the queue for too long") {
		t.Errorf("text does not explain expiry:\n%s", d.text())
	}
}

func TestBuildSuccessKinds(t *testing.T) {
	for _, tc := range []struct {
		action  Action
		subject string
	}{
		{Delivered, "Delivered: Quarterly figures"},
		{Relayed, "Relayed: Quarterly figures"},
		{Expanded, "Expanded: Quarterly figures"},
	} {
		t.Run(string(tc.action), func(t *testing.T) {
			r := report(Recipient{FinalRecipient: "bob@example.net", Action: tc.action, RemoteMTA: "mx.example.net"})
			r.Envelope.DSNRet = "FULL"
			_, d := build(t, r)
			if got := d.decodedSubject(); got != tc.subject {
				t.Errorf("Subject = %q", got)
			}
			wantField(t, d.perRcpt[0], "Action", string(tc.action))
			wantField(t, d.perRcpt[0], "Status", "2.0.0")
			if mt := d.parts[2].mediaType(); mt != "text/rfc822-headers" {
				t.Errorf("part 3 is %s", mt)
			}
		})
	}
}

func TestBuildMixedReport(t *testing.T) {
	ok := Recipient{FinalRecipient: "carol@example.org", Action: Delivered, Status: "2.0.0"}
	_, d := build(t, report(ok, userUnknown))
	if got := d.decodedSubject(); got != "Undeliverable: Quarterly figures" {
		t.Errorf("Subject = %q", got)
	}
	if len(d.perRcpt) != 2 {
		t.Fatalf("%d recipient blocks", len(d.perRcpt))
	}
	wantField(t, d.perRcpt[0], "Final-Recipient", "rfc822;carol@example.org")
	wantField(t, d.perRcpt[0], "Action", "delivered")
	wantField(t, d.perRcpt[1], "Final-Recipient", "rfc822;bob@example.net")
	wantField(t, d.perRcpt[1], "Action", "failed")
}

// After alias expansion the report names the address the sender used:
// their ORCPT when given, else the RCPT TO address it expanded from.
func TestBuildOriginalRecipient(t *testing.T) {
	for _, tc := range []struct {
		name, orcpt, envRcpt, want string
	}{
		{"expanded without ORCPT", "", "sales@example.com", "rfc822;sales@example.com"},
		{"ORCPT given", "rfc822;Sales@Example.COM", "sales@example.com", "rfc822;Sales@Example.COM"},
		{"ORCPT with xtext-worthy octets", "rfc822;a+b=c@example.com", "sales@example.com", "rfc822;a+b=c@example.com"},
		{"ORCPT control octet re-encoded", "rfc822;x\ry@example.com", "", "rfc822;x+0Dy@example.com"},
		{"ORCPT unknown type", "x400;/C=US/", "", "x400;/C=US/"},
		{"not expanded", "", "alice@example.com", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, d := build(t, report(Recipient{
				FinalRecipient: "alice@example.com", OriginalRecipient: tc.orcpt,
				EnvelopeRecipient: tc.envRcpt, Action: Failed, Status: "5.2.2",
			}))
			wantField(t, d.perRcpt[0], "Original-Recipient", tc.want)
			wantField(t, d.perRcpt[0], "Final-Recipient", "rfc822;alice@example.com")
		})
	}
}

func TestBuildReturnPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ret     string
		max     int64
		action  Action
		want    string // media type of part 3
		tooBig  bool
		wantAll bool
	}{
		{"HDRS", "HDRS", 0, Failed, "text/rfc822-headers", false, false},
		{"FULL", "FULL", 0, Failed, "message/rfc822", false, true},
		{"absent small", "", 0, Failed, "message/rfc822", false, true},
		{"absent at limit", "", int64(len(origMessage)), Failed, "message/rfc822", false, true},
		{"absent too large", "", int64(len(origMessage)) - 1, Failed, "text/rfc822-headers", true, false},
		{"FULL too large", "FULL", 100, Failed, "text/rfc822-headers", true, false},
		{"never full", "FULL", -1, Failed, "text/rfc822-headers", false, false},
		{"delay with FULL", "FULL", 0, Delayed, "text/rfc822-headers", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := report(Recipient{FinalRecipient: "bob@example.net", Action: tc.action})
			r.Envelope.DSNRet = tc.ret
			r.MaxReturnSize = tc.max
			_, d := build(t, r)
			if mt := d.parts[2].mediaType(); mt != tc.want {
				t.Errorf("part 3 is %s, want %s", mt, tc.want)
			}
			want := origHeader
			if tc.wantAll {
				want = origMessage
			}
			if string(d.parts[2].body) != want {
				t.Errorf("part 3 body:\n%q", d.parts[2].body)
			}
			if got := strings.Contains(d.text(), "only its header"); got != tc.tooBig {
				t.Errorf("text mentions the size limit: %v, want %v", got, tc.tooBig)
			}
		})
	}
}

// A message larger than the header budget and the limit is not read whole.
func TestBuildLargeOriginalReadBounded(t *testing.T) {
	big := origHeader + "\r\n" + strings.Repeat("x", 1<<20)
	cr := &countingReader{r: strings.NewReader(big)}
	r := report(userUnknown)
	r.Original = cr
	r.MaxReturnSize = 1000
	_, d := build(t, r)
	if mt := d.parts[2].mediaType(); mt != "text/rfc822-headers" {
		t.Errorf("part 3 is %s", mt)
	}
	if cr.n > headerBudget+1 {
		t.Errorf("read %d octets of the original, budget %d", cr.n, headerBudget+1)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestBuildEnvID(t *testing.T) {
	r := report(userUnknown)
	r.Envelope.DSNEnvID = "QQ314159.aBc"
	_, d := build(t, r)
	wantField(t, d.perMessage, "Original-Envelope-Id", "QQ314159.aBc")
}

func TestBuildInternationalized(t *testing.T) {
	orig := "From: =?utf-8?q?x?= <用户@例子.广告>\r\nSubject: Grüße\r\nMessage-ID: <ü@例子.广告>\r\n\r\nHallo Wörld\r\n"
	r := report(Recipient{
		FinalRecipient: "ännchen@beispiel.de", EnvelopeRecipient: "liste@beispiel.de",
		OriginalRecipient: "utf-8;Ännchen+1@beispiel.de",
		Action:            Failed, Status: "5.1.1", DiagnosticCode: "550 5.1.1 Unbekannt: ännchen",
	})
	r.Envelope.From = "用户@例子.广告"
	r.Envelope.SMTPUTF8 = true
	r.Envelope.Body = "8BITMIME"
	r.Original = strings.NewReader(orig)
	env, d := build(t, r)
	if !env.SMTPUTF8 || env.Body != "8BITMIME" {
		t.Errorf("envelope SMTPUTF8=%v Body=%q", env.SMTPUTF8, env.Body)
	}
	wantField(t, d.header, "To", "<用户@例子.广告>")
	wantField(t, d.header, "In-Reply-To", "") // not a printable-ASCII msg-id
	if got := d.decodedSubject(); got != "Undeliverable: Grüße" {
		t.Errorf("Subject = %q", got)
	}
	if mt := d.parts[1].mediaType(); mt != "message/global-delivery-status" {
		t.Errorf("part 2 is %s", mt)
	}
	p := d.perRcpt[0]
	wantField(t, p, "Final-Recipient", "utf-8;ännchen@beispiel.de")
	wantField(t, p, "Original-Recipient", `utf-8;Ännchen\x{2B}1@beispiel.de`)
	wantField(t, p, "Diagnostic-Code", "smtp; 550 5.1.1 Unbekannt: ännchen")
	if mt := d.parts[2].mediaType(); mt != "message/global" {
		t.Errorf("part 3 is %s", mt)
	}
	if string(d.parts[2].body) != orig {
		t.Errorf("original not returned verbatim: %q", d.parts[2].body)
	}
	if ct := d.parts[0].header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("text part Content-Type %q", ct)
	}
	if !strings.Contains(d.text(), "ännchen@beispiel.de") {
		t.Errorf("text part lacks the address:\n%s", d.text())
	}

	r.Original = strings.NewReader(orig)
	r.Envelope.DSNRet = "HDRS"
	_, d = build(t, r)
	if mt := d.parts[2].mediaType(); mt != "message/global-headers" {
		t.Errorf("HDRS: part 3 is %s", mt)
	}
}

// An ASCII report of an ASCII message stays out of the global types even
// when a remote reply holds UTF-8: the field gets "?" instead.
func TestBuildASCIIReportReplacesNonASCIIText(t *testing.T) {
	rc := userUnknown
	rc.DiagnosticCode = "550 5.1.1 Benutzer unbekannt – ñ"
	env, d := build(t, report(rc))
	if env.Body != "7BIT" { // the text part is UTF-8 but quoted-printable
		t.Errorf("Body = %q", env.Body)
	}
	if mt := d.parts[1].mediaType(); mt != "message/delivery-status" {
		t.Errorf("part 2 is %s", mt)
	}
	wantField(t, d.perRcpt[0], "Diagnostic-Code", "smtp; 550 5.1.1 Benutzer unbekannt ? ?")
	if !strings.Contains(d.text(), "unbekannt – ñ") {
		t.Errorf("text part should keep the reply as given:\n%s", d.text())
	}
}

// Values from outside cannot add fields or break the line limit.
func TestBuildFoldsAndNeutralises(t *testing.T) {
	rc := userUnknown
	rc.DiagnosticCode = "550 5.1.1 " + strings.Repeat("word ", 300) + strings.Repeat("y", 1500) +
		"\r\nBcc: victim@example.org"
	rc.RemoteMTA = "mx.example.net\r\nX-Evil: 1"
	r := report(rc)
	r.Original = strings.NewReader("Subject: " + strings.Repeat("long subject ", 100) + "\r\n\r\nbody\r\n")
	_, d := build(t, r) // build checks every line's length and ending
	p := d.perRcpt[0]
	if len(p["Bcc"]) != 0 || len(p["X-Evil"]) != 0 {
		t.Errorf("injected fields: %v", p)
	}
	wantField(t, p, "Remote-Mta", "dns; mx.example.net X-Evil: 1")
	diag := p.Get("Diagnostic-Code")
	if !strings.HasPrefix(diag, "smtp; 550 5.1.1 word word") || len(diag) > len("smtp; ")+maxValue+5 {
		t.Errorf("Diagnostic-Code = %q... (%d octets)", truncate(diag, 60), len(diag))
	}
	if got := d.decodedSubject(); !strings.HasPrefix(got, "Undeliverable: long subject long") || len(got) > maxSubject {
		t.Errorf("Subject = %q", got)
	}
}

func TestBuildRefusesNullSender(t *testing.T) {
	r := report(userUnknown)
	r.Envelope.From = ""
	_, body, err := Build(r)
	if !errors.Is(err, ErrNullSender) || body != nil {
		t.Fatalf("Build to <> = %v, %d octets; want ErrNullSender", err, len(body))
	}
}

func TestBuildRejectsIncompleteReports(t *testing.T) {
	for name, mutate := range map[string]func(*Report){
		"no envelope":      func(r *Report) { r.Envelope = nil },
		"no recipients":    func(r *Report) { r.Recipients = nil },
		"unknown action":   func(r *Report) { r.Recipients[0].Action = "bounced" },
		"no final rcpt":    func(r *Report) { r.Recipients[0].FinalRecipient = "" },
		"no reporting MTA": func(r *Report) { r.ReportingMTA = "" },
		"bad reporting":    func(r *Report) { r.ReportingMTA = "hub\r\nX: y" },
		"sender with CRLF": func(r *Report) { r.Envelope.From = "a@b\r\nBcc: c@d" },
		"sender with >":    func(r *Report) { r.Envelope.From = "a@b>" },
		"read error":       func(r *Report) { r.Original = io.MultiReader(strings.NewReader("Subj"), errReader{}) },
	} {
		t.Run(name, func(t *testing.T) {
			r := report(userUnknown)
			mutate(&r)
			if _, _, err := Build(r); err == nil {
				t.Error("Build succeeded")
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestBuildWithoutOriginal(t *testing.T) {
	r := report(userUnknown)
	r.Original = nil
	r.Envelope.MessageID = ""
	_, d := build(t, r)
	if got := d.decodedSubject(); got != "Undeliverable" {
		t.Errorf("Subject = %q", got)
	}
	if len(d.parts[2].body) != 0 {
		t.Errorf("part 3 = %q", d.parts[2].body)
	}
}

func TestBuildLocalMessage(t *testing.T) {
	// Mail the hub made itself has no client: no Received-From-MTA.
	r := report(userUnknown)
	r.Envelope.ClientAddr, r.Envelope.ClientHelo = "", ""
	r.Envelope.ReceivedAt = time.Time{}
	_, d := build(t, r)
	wantField(t, d.perMessage, "Received-From-Mta", "")
	wantField(t, d.perMessage, "Arrival-Date", "")
}

func TestStatusDefaults(t *testing.T) {
	for _, tc := range []struct {
		a    Action
		s    string
		want string
	}{
		{Failed, "", "5.0.0"}, {Failed, "5.1", "5.0.0"}, {Failed, "x.1.1", "5.0.0"},
		{Delayed, "", "4.0.0"}, {Delivered, "", "2.0.0"}, {Relayed, "2.1.5", "2.1.5"},
		{Failed, "5.1.10", "5.1.10"}, {Failed, "5.1234.1", "5.0.0"},
	} {
		if got := status(Recipient{Action: tc.a, Status: tc.s}); got != tc.want {
			t.Errorf("status(%s, %q) = %q, want %q", tc.a, tc.s, got, tc.want)
		}
	}
}

func TestWanted(t *testing.T) {
	all := []Action{Failed, Delayed, Delivered, Relayed, Expanded}
	for _, tc := range []struct {
		notify []string
		want   []Action
	}{
		{nil, []Action{Failed, Delayed}},
		{[]string{}, []Action{Failed, Delayed}},
		{[]string{"NEVER"}, nil},
		{[]string{"never"}, nil},
		{[]string{"SUCCESS"}, []Action{Delivered, Relayed, Expanded}},
		{[]string{"FAILURE"}, []Action{Failed}},
		{[]string{"DELAY"}, []Action{Delayed}},
		{[]string{"SUCCESS", "FAILURE"}, []Action{Failed, Delivered, Relayed, Expanded}},
		{[]string{"failure", "delay"}, []Action{Failed, Delayed}},
		{[]string{"SUCCESS", "FAILURE", "DELAY"}, all},
	} {
		for _, a := range all {
			if got, want := Wanted(tc.notify, a), slices.Contains(tc.want, a); got != want {
				t.Errorf("Wanted(%q, %s) = %v, want %v", tc.notify, a, got, want)
			}
		}
	}
	if Wanted(nil, "bounced") {
		t.Error("Wanted(nil, unknown action) = true")
	}
}

func TestHeaderSection(t *testing.T) {
	for _, tc := range []struct {
		msg      string
		complete bool
		want     string
	}{
		{"A: 1\r\nB: 2\r\n\r\nbody\r\n", true, "A: 1\r\nB: 2\r\n"},
		{"A: 1\nB: 2\n\nbody\n", true, "A: 1\nB: 2\n"},
		{"A: 1\r\nB: 2\r\n", true, "A: 1\r\nB: 2\r\n"},
		{"A: 1\r\nB: 2", true, "A: 1\r\nB: 2"},
		{"A: 1\r\nB: 2", false, "A: 1\r\n"},
		{"\r\nbody", true, ""},
		{"", true, ""},
	} {
		if got := string(headerSection([]byte(tc.msg), tc.complete)); got != tc.want {
			t.Errorf("headerSection(%q, %v) = %q, want %q", tc.msg, tc.complete, got, tc.want)
		}
	}
}

func TestFieldFolding(t *testing.T) {
	var b bytes.Buffer
	field(&b, "Diagnostic-Code", "smtp; "+strings.Repeat("abc ", 60)+strings.Repeat("z", 2500))
	if err := checkLines(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\r\n"), "\r\n")
	if len(lines) < 5 {
		t.Fatalf("not folded: %d lines", len(lines))
	}
	for _, l := range lines[1:] {
		if l[0] != ' ' {
			t.Errorf("continuation line %q does not start with a space", truncate(l, 20))
		}
	}
	if len(lines[0]) > foldAt {
		t.Errorf("first line is %d octets", len(lines[0]))
	}
}

// A 5.6.7 for non-ASCII header fields reads as that in the text part: the
// words for the status code do not claim the addresses were non-ASCII, and
// the deliverer's reply says what needed SMTPUTF8.
func TestBuildSMTPUTF8HeaderCause(t *testing.T) {
	rc := userUnknown
	rc.Status = "5.6.7"
	rc.RemoteMTA = ""
	rc.DiagnosticCode = "553 5.6.7 mx.example.net does not support SMTPUTF8, needed for the message's non-ASCII header fields (its addresses are ASCII)"
	_, d := build(t, report(rc))
	text := d.text()
	if strings.Contains(text, "non-ASCII addresses") {
		t.Errorf("text blames the addresses:\n%s", text)
	}
	for _, want := range []string{"internationalized mail (SMTPUTF8)", "non-ASCII header fields (its addresses are ASCII)"} {
		if !strings.Contains(strings.Join(strings.Fields(text), " "), want) {
			t.Errorf("text part lacks %q:\n%s", want, text)
		}
	}
}
