package lmtp

// The LMTP deliverer's span (docs/spans.md): "lmtp.client" (CLIENT), one per
// Deliver call, a child of the transport's delivery attempt span, from
// taking or dialling the connection to the last per-recipient reply
// (RFC 2033 §4.2). server.address is the server as configured (a host, or
// a Unix socket's path with network.transport=unix); the reply attributes
// are those of the first recipient not delivered, else the first one's.

import (
	"context"
	"net"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub/delivery"
)

func (d *Deliverer) startClient(ctx context.Context, server string) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{semconv.NetworkProtocolName("lmtp")}
	if path, ok := strings.CutPrefix(server, "unix:"); ok {
		attrs = append(attrs, semconv.NetworkTransportUnix, semconv.ServerAddress(path))
	} else if h, p, err := net.SplitHostPort(server); err == nil {
		attrs = append(attrs, semconv.NetworkTransportTCP, semconv.ServerAddress(h))
		if n, err := strconv.Atoi(p); err == nil {
			attrs = append(attrs, semconv.ServerPort(n))
		}
	}
	return d.tracer.Start(ctx, "lmtp.client", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

func endClient(span trace.Span, results []delivery.Result) {
	if len(results) == 0 {
		span.End()
		return
	}
	res := results[0]
	for _, r := range results {
		if r.Status != delivery.Delivered {
			res = r
			break
		}
	}
	if res.Code != 0 {
		span.SetAttributes(attribute.Int("smtp.response.code", res.Code))
	}
	if res.Enhanced != "" {
		span.SetAttributes(attribute.String("smtp.response.enhanced_code", res.Enhanced))
	}
	if res.RemoteMTA != "" {
		span.SetAttributes(attribute.String("mta.remote", res.RemoteMTA))
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
