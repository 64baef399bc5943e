package smtpout

// Spans of the SMTP deliverer, children of the transport's delivery
// attempt span (docs/spans.md):
//
//   - "dns.lookup MX" and "dns.lookup host" (CLIENT), one per resolver
//     query, with dns.question.name, the number of answers, and error.type
//     ("NXDOMAIN", "timeout" or "SERVFAIL"-like "temporary") on failure;
//   - "smtp.client" (CLIENT), one per host tried (a fresh connection or an
//     idle one reused), from the dial to the transaction's last reply:
//     server.address (the MX or smart host name), server.port,
//     network.peer.address and port (the address dialled), TLS, whether the
//     connection was reused, and the reply that decided the attempt.

import (
	"context"
	"errors"
	"net"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub/delivery"
)

// tracedResolver opens a CLIENT span around each lookup of r.
type tracedResolver struct {
	r      Resolver
	tracer trace.Tracer
}

func (t tracedResolver) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	ctx, span := t.start(ctx, "dns.lookup MX", domain)
	mxs, err := t.r.LookupMX(ctx, domain)
	endLookup(span, len(mxs), err)
	return mxs, err
}

func (t tracedResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	ctx, span := t.start(ctx, "dns.lookup host", host)
	addrs, err := t.r.LookupHost(ctx, host)
	endLookup(span, len(addrs), err)
	return addrs, err
}

func (t tracedResolver) start(ctx context.Context, name, question string) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.DNSQuestionName(question)))
}

func endLookup(span trace.Span, answers int, err error) {
	span.SetAttributes(attribute.Int("dns.answers.count", answers))
	if err != nil {
		kind := "temporary"
		var de *net.DNSError
		switch {
		case errors.As(err, &de) && de.IsNotFound:
			kind = "NXDOMAIN" // or NODATA: the name has no such records
		case errors.As(err, &de) && de.IsTimeout:
			kind = "timeout"
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(kind))
		if kind != "NXDOMAIN" {
			// No such name is an answer, not a failure of the lookup.
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// startClient opens the span of the conversation with target t.
func (d *Deliverer) startClient(ctx context.Context, t target, reused bool) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		semconv.NetworkTransportTCP,
		semconv.NetworkProtocolName("smtp"),
		semconv.ServerAddress(t.host),
		attribute.Bool("mta.connection.reused", reused),
	}
	if h, p, err := net.SplitHostPort(t.addr); err == nil {
		attrs = append(attrs, semconv.NetworkPeerAddress(h))
		if n, err := strconv.Atoi(p); err == nil {
			attrs = append(attrs, semconv.ServerPort(n), semconv.NetworkPeerPort(n))
		}
	}
	return d.tracer.Start(ctx, "smtp.client", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endClient ends a conversation's span: c is the connection (nil if none
// was made), res the result that decided the host's part, results the
// per-recipient ones when the transaction was made.
func endClient(span trace.Span, c *conn, res delivery.Result, results []delivery.Result) {
	if c != nil {
		span.SetAttributes(semconv.TLSEstablished(c.tls))
	}
	if res.Code == 0 && len(results) > 0 {
		res = results[0]
		for _, r := range results {
			if r.Status != delivery.Delivered {
				res = r // the reply worth looking at
				break
			}
		}
	}
	if res.Code != 0 {
		span.SetAttributes(attribute.Int("smtp.response.code", res.Code))
	}
	if res.Enhanced != "" {
		span.SetAttributes(attribute.String("smtp.response.enhanced_code", res.Enhanced))
	}
	if res.Status != delivery.Delivered {
		et := res.Enhanced
		if et == "" {
			et = semconv.ErrorTypeOther.Value.AsString()
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(et))
		span.SetStatus(codes.Error, res.String())
	}
	span.End()
}
