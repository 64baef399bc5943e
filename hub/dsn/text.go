package dsn

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"mime/quotedprintable"
	"strings"
)

// writeTextPart writes the first part (RFC 6522 §3): what happened, in
// words, for each recipient. It is US-ASCII 7bit when it can be, otherwise
// UTF-8 quoted-printable, so it passes any hop whatever the addresses and
// remote replies hold.
func writeTextPart(mw *multipart.Writer, r Report, kind Action, ret returned) error {
	text := explanation(r, kind, ret)
	plain := isASCII(text)
	for line := range strings.Lines(text) {
		if len(line) > maxLine-2 {
			plain = false
		}
	}
	if plain {
		pw, err := mw.CreatePart(textprotoHeader(
			"Content-Type", "text/plain; charset=us-ascii",
			"Content-Description", "Notification",
			"Content-Transfer-Encoding", "7bit",
		))
		if err != nil {
			return err
		}
		_, err = pw.Write([]byte(strings.ReplaceAll(text, "\n", "\r\n")))
		return err
	}
	pw, err := mw.CreatePart(textprotoHeader(
		"Content-Type", "text/plain; charset=utf-8",
		"Content-Description", "Notification",
		"Content-Transfer-Encoding", "quoted-printable",
	))
	if err != nil {
		return err
	}
	qw := quotedprintable.NewWriter(pw) // text mode: "\n" becomes CRLF
	if _, err := qw.Write([]byte(text)); err != nil {
		return err
	}
	return qw.Close()
}

// explanation is the text of the first part, lines ending in "\n".
func explanation(r Report, kind Action, ret returned) string {
	var b bytes.Buffer
	host := r.ReportingMTA
	switch kind {
	case Failed:
		fmt.Fprintf(&b, "Your message could not be delivered to the recipients listed below.\n"+
			"The mail hub %s has given up on them and will not try again.\n", host)
	case Delayed:
		fmt.Fprintf(&b, "Your message has not been delivered yet to the recipients listed below.\n"+
			"The mail hub %s keeps trying; there is no need to send it again.\n"+
			"If it still fails when the time below has passed, you will get another notice.\n", host)
	case Delivered:
		fmt.Fprintf(&b, "Your message was delivered to the recipients listed below.\n"+
			"You asked the mail hub %s to confirm this.\n", host)
	case Relayed:
		fmt.Fprintf(&b, "The mail hub %s passed your message on to a mail system that does not\n"+
			"report deliveries. You will get no further notice for the recipients below.\n", host)
	case Expanded:
		fmt.Fprintf(&b, "Your message reached the list or alias below at the mail hub %s,\n"+
			"which passed it on to its members.\n", host)
	}
	for _, rc := range r.Recipients {
		b.WriteString("\n")
		writeRecipientText(&b, rc)
	}
	b.WriteString("\n")
	if r.QueueID != "" {
		fmt.Fprintf(&b, "Queue ID: %s\n", textValue(r.QueueID, false))
	}
	if !r.Envelope.ReceivedAt.IsZero() {
		fmt.Fprintf(&b, "Received: %s\n", date(r.Envelope.ReceivedAt))
	}
	if ret.tooBig {
		fmt.Fprintf(&b, "\nThe original message is larger than %d bytes, so only its header\n"+
			"is attached.\n", returnLimit(r))
	}
	b.WriteString("\nThe attached delivery report (RFC 3464) has the same details for programs.\n")
	return b.String()
}

// writeRecipientText describes one recipient in a few indented lines.
func writeRecipientText(b *bytes.Buffer, rc Recipient) {
	b.WriteString("  " + textValue(rc.FinalRecipient, true) + "\n")
	if orig := rc.EnvelopeRecipient; orig != "" && !strings.EqualFold(orig, rc.FinalRecipient) {
		b.WriteString("    Sent to:        " + textValue(orig, true) + "\n")
	}
	st := status(rc)
	line := "    Result:         " + actionWords(rc.Action) + " (" + st
	if why := statusWords(st); why != "" {
		line += ": " + why
	}
	b.WriteString(line + ")\n")
	if d := textValue(rc.DiagnosticCode, true); d != "" {
		b.WriteString("    Reply:          " + d + "\n")
	}
	if rc.RemoteMTA != "" {
		b.WriteString("    Reported by:    " + mtaName(rc.RemoteMTA, true) + "\n")
	}
	if !rc.LastAttempt.IsZero() {
		b.WriteString("    Last attempt:   " + date(rc.LastAttempt) + "\n")
	}
	if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
		b.WriteString("    Trying until:   " + date(rc.WillRetryUntil) + "\n")
	}
}

func actionWords(a Action) string {
	switch a {
	case Failed:
		return "not delivered"
	case Delayed:
		return "delayed, still trying"
	case Delivered:
		return "delivered"
	case Relayed:
		return "passed on"
	case Expanded:
		return "delivered to the list and forwarded"
	}
	return string(a)
}

// statusWords explains the common RFC 3463 subject.detail codes in plain
// words; "" for the others (the code and the reply speak for themselves).
func statusWords(st string) string {
	_, sd, _ := strings.Cut(st, ".")
	switch sd {
	case "1.1":
		return "no such mailbox"
	case "1.2", "1.10":
		return "the destination domain does not accept mail"
	case "2.1":
		return "the mailbox is disabled"
	case "2.2":
		return "the mailbox is full"
	case "3.4":
		return "the message is too large for the destination"
	case "4.1", "4.2":
		return "the destination server did not answer or broke the connection"
	case "4.4":
		return "no route to the destination"
	case "4.6":
		return "a routing loop was detected"
	case "4.7":
		return "the message waited in the queue for too long"
	case "6.3":
		return "the message would have to be converted for the destination, and it cannot be"
	case "6.7":
		// Non-ASCII addresses or non-ASCII header fields: the reply says
		// which (RFC 6531 §3.2 names both; only the deliverer knows).
		return "the destination does not support internationalized mail (SMTPUTF8)"
	case "7.1":
		return "refused by the destination's policy"
	}
	return ""
}
