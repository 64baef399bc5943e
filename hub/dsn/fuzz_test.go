package dsn

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"hubd/hub"
	"hubd/internal/enhancedstatus"
)

// FuzzBuild feeds Build arbitrary originals, senders, RET values, actions,
// size limits, remote replies, ORCPTs and ENVIDs. Build must never panic;
// when it succeeds its output must parse as a well-formed DSN (parseDSN:
// three parts, CRLF lines of at most 998 octets in everything Build writes,
// every recipient block complete) whose returned content is the original's
// prefix, and it must refuse <> as the recipient.
func FuzzBuild(f *testing.F) {
	f.Add([]byte(origMessage), "sender@remote.test", "", false, uint8(0), int64(0), "550 5.1.1 User unknown", "", "")
	f.Add([]byte("Subject: x\n\nbare LF body\n"), "a@b", "HDRS", false, uint8(1), int64(5), "421 busy\r\n", "rfc822;a+2Bb@c", "id+41")
	f.Add([]byte("Subject: Grüße\r\n\r\nWörld"), "用户@例子.广告", "FULL", true, uint8(0), int64(-1), "550 nö", "utf-8;ä@b", "")
	f.Add([]byte{}, "", "", false, uint8(2), int64(1), "", "", "")
	f.Fuzz(func(t *testing.T, original []byte, from, ret string, smtputf8 bool, action uint8,
		maxReturn int64, diag, orcpt, envid string) {
		actions := []Action{Failed, Delayed, Delivered, Relayed, Expanded}
		a := actions[int(action)%len(actions)]
		env := &hub.Envelope{
			From: from, SMTPUTF8: smtputf8, DSNRet: ret, DSNEnvID: envid,
			ReceivedAt: arrived, ClientAddr: "192.0.2.7:25", ClientHelo: diag,
		}
		r := Report{
			ReportingMTA: "hub.example.com",
			Envelope:     env,
			QueueID:      envid,
			Recipients: []Recipient{
				{FinalRecipient: "x" + orcpt, OriginalRecipient: orcpt, EnvelopeRecipient: diag,
					Action: a, Status: envid, DiagnosticCode: diag, RemoteMTA: diag,
					LastAttempt: now, WillRetryUntil: now.Add(time.Hour)},
				{FinalRecipient: "second@example.com", Action: Failed},
			},
			Original:      bytes.NewReader(original),
			MaxReturnSize: maxReturn % (1 << 16),
			Now:           now,
		}
		out, body, err := Build(r)
		if from == "" {
			if !errors.Is(err, ErrNullSender) {
				t.Fatalf("Build to <> = %v", err)
			}
			return
		}
		if err != nil {
			return // a sender that cannot be written in a header
		}
		if out.From != "" || len(out.Recipients) != 1 || out.Recipients[0].Address != from {
			t.Fatalf("envelope %+v", out)
		}
		if out.SMTPUTF8 != !isASCII(from) {
			t.Errorf("SMTPUTF8 = %v for sender %q", out.SMTPUTF8, from)
		}
		if (out.Body == "8BITMIME") != has8bit(body) {
			t.Errorf("Body = %q", out.Body)
		}
		d, err := parseDSN(body)
		if err != nil {
			t.Fatalf("%v\n%q", err, body)
		}
		if len(d.perRcpt) != 2 {
			t.Fatalf("%d recipient blocks", len(d.perRcpt))
		}
		if got := d.perRcpt[0].Get("Action"); got != string(a) {
			t.Errorf("Action = %q, want %q", got, a)
		}
		if !enhancedstatus.Valid(d.perRcpt[0].Get("Status")) {
			t.Errorf("Status = %q", d.perRcpt[0].Get("Status"))
		}
		ret3 := d.parts[2].body
		if !bytes.HasPrefix(original, bytes.TrimSuffix(ret3, []byte("\r\n"))) {
			t.Errorf("part 3 is not a prefix of the original:\n%q\n%q", ret3, original)
		}
		if strings.HasPrefix(d.parts[2].mediaType(), "message/") && !bytes.Equal(ret3, original) &&
			d.parts[2].mediaType() != "message/global-headers" {
			t.Errorf("full return differs from the original")
		}
	})
}
