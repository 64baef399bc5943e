package connectors

// Spans of the receive side (docs/spans.md has the whole model):
//
//   - smtp.session (SERVER), one per connection, from accept to close,
//     across STARTTLS: connector, client and immediate peer, the address
//     the client reached, TLS once a handshake completes, the EHLO name,
//     AUTH mechanism and outcome (the login only with
//     telemetry.record_addresses; a password never).
//   - smtp.transaction (SERVER), child of the session, one per MAIL
//     command, ending at the transaction's final reply: the MAIL refusal,
//     the reply to DATA/BDAT, or RSET/QUIT/connection loss without one.
//     Its context is the one stored with the message (hub.Envelope
//     .TraceParent), which every delivery attempt links to.
//
// Both are SERVER spans: each is the server's handling of a client's
// request (the connection; the mail transaction), and span-derived metrics
// (RED dashboards, service graphs) look at SERVER spans, so a refused
// transaction shows up in an error rate.
//
// A refusal sets error.type to the enhanced status code (RFC 3463; the
// basic code when there is none), a low-cardinality value that names the
// reason. The span status is Error for a 4xx (the message could not be
// taken now: a local problem, a limit, back pressure — something an
// operator looks at) and stays Unset for a 5xx (a permanent refusal is a
// decision about the client's request, not a fault of ours), the way the
// HTTP and RPC conventions treat client errors on server spans.
//
// Trace context is started here and nowhere else: a traceparent header in
// the message content is the client's data (RFC 5322 header fields are
// whatever the sender wrote) and is never extracted.

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"hubd/policy"
)

// Attribute keys of our own (no semantic convention covers SMTP yet:
// semantic-conventions#1945).
const (
	attrConnector     = attribute.Key("smtp.connector")
	attrHelo          = attribute.Key("smtp.helo")
	attrAuthMechanism = attribute.Key("smtp.auth.mechanism")
	attrAuthOutcome   = attribute.Key("smtp.auth.outcome")
	attrRcptCount     = attribute.Key("smtp.rcpt.count")
	attrResponseCode  = attribute.Key("smtp.response.code")
	attrEnhancedCode  = attribute.Key("smtp.response.enhanced_code")
	attrMailFrom      = attribute.Key("smtp.mail.from") // only with record_addresses
	attrRcptTo        = attribute.Key("smtp.rcpt.to")   // only with record_addresses
	attrCommand       = attribute.Key("smtp.command")
	attrQueueID       = attribute.Key("mta.queue_id")
	attrMessageSize   = attribute.Key("mta.message.size")
)

// sessionAttributes are the smtp.session span's attributes at accept:
// client.* is the client (the PROXY header's source, if any),
// network.peer.* the host that connected to us, server.* the address it
// reached.
func sessionAttributes(connector, id string, raw net.Conn) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attrConnector.String(connector),
		semconv.NetworkTransportTCP,
		semconv.NetworkProtocolName("smtp"),
		attribute.String("hubd.session_id", id),
	}
	attrs = appendAddr(attrs, raw.RemoteAddr(), semconv.ClientAddress, semconv.ClientPort)
	peer := raw.RemoteAddr()
	if bc, ok := raw.(*bufferedConn); ok {
		peer = bc.Conn.RemoteAddr()
	}
	attrs = appendAddr(attrs, peer, semconv.NetworkPeerAddress, semconv.NetworkPeerPort)
	return appendAddr(attrs, raw.LocalAddr(), semconv.ServerAddress, semconv.ServerPort)
}

func appendAddr(attrs []attribute.KeyValue, a net.Addr, host func(string) attribute.KeyValue, port func(int) attribute.KeyValue) []attribute.KeyValue {
	if a == nil {
		return attrs
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return attrs
	}
	attrs = append(attrs, host(h))
	if n, err := strconv.Atoi(p); err == nil {
		attrs = append(attrs, port(n))
	}
	return attrs
}

// tlsAttributes describe a completed handshake.
func tlsAttributes(cs *tls.ConnectionState) []attribute.KeyValue {
	v := strings.TrimPrefix(tls.VersionName(cs.Version), "TLS ")
	return []attribute.KeyValue{
		semconv.TLSEstablished(true),
		semconv.TLSProtocolNameTLS,
		semconv.TLSProtocolVersion(v),
		semconv.TLSCipher(tls.CipherSuiteName(cs.CipherSuite)),
	}
}

// recordAddresses says whether envelope addresses and logins may go into
// span attributes (telemetry.record_addresses).
func (s *session) recordAddresses() bool { return s.c.cfg.Telemetry.RecordAddresses }

// authAttempt records an AUTH exchange on the session span: the mechanism
// and its outcome ("success", "failure", "blocked", "temporary_failure"),
// as attributes (the last attempt's) and as an event per attempt. user is
// recorded only with record_addresses.
func (s *session) authAttempt(mechanism, outcome, user string) {
	attrs := []attribute.KeyValue{attrAuthMechanism.String(mechanism), attrAuthOutcome.String(outcome)}
	if user != "" && s.recordAddresses() {
		attrs = append(attrs, semconv.UserName(user))
	}
	s.st.span.SetAttributes(attrs...)
	s.st.span.AddEvent("smtp.auth", trace.WithAttributes(attrs...))
}

// txTrace is the span of the mail transaction in progress.
type txTrace struct {
	ctx  context.Context
	span trace.Span
	// refusal is the last RCPT refusal, which the transaction's span
	// carries if no message comes of it.
	refusal *policy.Reply
}

// startTransaction opens the span of a transaction at MAIL.
func (s *session) startTransaction() *txTrace {
	ctx, span := s.c.svc.tracer.Start(s.st.ctx, "smtp.transaction",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attrConnector.String(s.c.rc.Name), semconv.NetworkProtocolName("smtp")))
	return &txTrace{ctx: ctx, span: span}
}

// refused records a reply refusing cmd on the transaction: an event (the
// recipient's address only with record_addresses); the span's own
// error.type and reply are set when it ends (end).
func (t *txTrace) refused(cmd string, r *policy.Reply, addr string) {
	attrs := append(replyAttributes(r), attrCommand.String(cmd))
	if addr != "" {
		attrs = append(attrs, attrRcptTo.String(addr))
	}
	t.span.AddEvent("smtp.refused", trace.WithAttributes(attrs...))
	if cmd == "RCPT" {
		t.refusal = r
	}
}

// end ends the transaction's span with its final reply: r (nil when the
// transaction ended without one: RSET, QUIT or a lost connection, where
// the last RCPT refusal, if any, stands for it).
func (t *txTrace) end(r *policy.Reply) {
	if r == nil {
		r = t.refusal
	}
	if r != nil {
		t.span.SetAttributes(replyAttributes(r)...)
		if r.Code >= 400 {
			t.span.SetAttributes(semconv.ErrorTypeKey.String(errorType(r)))
			if r.Code < 500 {
				t.span.SetStatus(codes.Error, r.Error())
			}
		}
	}
	t.span.End()
}

func replyAttributes(r *policy.Reply) []attribute.KeyValue {
	attrs := []attribute.KeyValue{attrResponseCode.Int(r.Code)}
	if r.Enhanced != "" {
		attrs = append(attrs, attrEnhancedCode.String(r.Enhanced))
	}
	return attrs
}

// errorType is error.type for a refusal: the enhanced status code, which
// names the reason with few values (5.7.1, 5.1.1, 4.3.1 ...), or the
// basic code without one.
func errorType(r *policy.Reply) string {
	if r.Enhanced != "" {
		return r.Enhanced
	}
	return strconv.Itoa(r.Code)
}
