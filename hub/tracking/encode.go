package tracking

import (
	"strconv"
	"unicode/utf8"
)

// timeLayout is RFC 3339 with exactly three fractional digits; with a UTC
// time it always ends in "Z".
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// appendEvent appends e as one JSON line (with its "\n") to b. It is
// written by hand rather than with encoding/json because Record is on the
// path of every message and this avoids reflection and most allocations;
// the json tags of Event are the reference, and the tests check that
// encoding/json decodes every line back to the same Event.
func appendEvent(b []byte, e *Event) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, '"')
	b = appendField(b, "event", string(e.Event))
	b = appendField(b, "queue_id", e.QueueID)
	b = appendField(b, "message_id", e.MessageID)
	b = appendField(b, "source", e.Source)
	b = appendField(b, "node", e.Node)
	b = appendField(b, "connector", e.Connector)
	b = appendField(b, "client_addr", e.ClientAddr)
	b = appendField(b, "sender", e.Sender)
	b = appendField(b, "recipient", e.Recipient)
	b = appendField(b, "related_recipient", e.RelatedRecipient)
	b = appendField(b, "auth_results", e.AuthResults)
	b = appendField(b, "next_hop", e.NextHop)
	b = appendField(b, "reply", e.Reply)
	b = appendField(b, "remote_mta", e.RemoteMTA)
	if e.Size != 0 {
		b = append(b, `,"size":`...)
		b = strconv.AppendInt(b, e.Size, 10)
	}
	b = appendField(b, "reference", e.Reference)
	b = appendField(b, "trace_id", e.TraceID)
	return append(b, "}\n"...)
}

// appendField appends `,"key":"value"`, or nothing when value is empty.
func appendField(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string (RFC 8259 §7). Control characters
// are escaped, so no value can break the one-event-per-line framing; each
// byte of invalid UTF-8 becomes U+FFFD, as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0 // s[start:i] is pending, needs no escaping
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
