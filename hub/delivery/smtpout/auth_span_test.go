package smtpout

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"hubd/hub/delivery"
	"hubd/internal/smtpsink"
)

// The smtp.client span of a refused login carries the mechanism, an
// smtp.auth event with the reason, and the deferral as its status; the
// password appears nowhere in it.
func TestAuthFailureInSpan(t *testing.T) {
	so, pool := authSinkOptions(t)
	sink := smtpsink.Start(t, so)
	rec := tracetest.NewSpanRecorder()
	opts := trusting(pool)
	opts.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	res := deliver(t, opts, verifiedAuthHop(sink.Addr(), "wrong-password", "PLAIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.8")
	var span sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "smtp.client" {
			span = s
		}
	}
	if span == nil {
		t.Fatal("no smtp.client span")
	}
	attrs := map[string]string{}
	for _, kv := range span.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["smtp.auth.mechanism"] != "PLAIN" || attrs["smtp.response.code"] != "451" || attrs["smtp.response.enhanced_code"] != "4.7.8" {
		t.Errorf("span attributes %v", attrs)
	}
	if span.Status().Code != codes.Error || span.Status().Description != "451 4.7.8 "+res[0].Text {
		t.Errorf("span status %+v", span.Status())
	}
	var found bool
	for _, ev := range span.Events() {
		if ev.Name != "smtp.auth" {
			continue
		}
		found = true
		for _, kv := range ev.Attributes {
			switch string(kv.Key) {
			case "smtp.auth.success":
				if kv.Value.AsBool() {
					t.Error("smtp.auth event says success")
				}
			case "reason":
				if kv.Value.AsString() != res[0].Text {
					t.Errorf("event reason %q, want %q", kv.Value.AsString(), res[0].Text)
				}
			}
		}
	}
	if !found {
		t.Error("no smtp.auth event")
	}
	all := span.Status().Description
	for _, kv := range span.Attributes() {
		all += " " + kv.Value.Emit()
	}
	for _, ev := range span.Events() {
		for _, kv := range ev.Attributes {
			all += " " + kv.Value.Emit()
		}
	}
	if strings.Contains(all, "wrong-password") {
		t.Errorf("the password is in the span: %s", all)
	}
}
