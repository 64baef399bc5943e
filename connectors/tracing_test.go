package connectors

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"hubd/policy"
)

// tracedSubmission starts the submission connector with an SDK tracer
// recording into the returned recorder.
func tracedSubmission(t *testing.T, recordAddresses bool) (*harness, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	h := startWith(t, submissionHCL, func(cfg *policy.Config, o *Options) {
		cfg.Telemetry.RecordAddresses = recordAddresses
		o.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	})
	return h, rec
}

// sessionSpan waits for the one ended smtp.session span and returns its
// attributes, event attributes included.
func sessionSpan(t *testing.T, rec *tracetest.SpanRecorder) (sdktrace.ReadOnlySpan, map[attribute.Key]string) {
	t.Helper()
	var s sdktrace.ReadOnlySpan
	eventually(t, "session span ended", func() bool {
		for _, e := range rec.Ended() {
			if e.Name() == "smtp.session" {
				s = e
				return true
			}
		}
		return false
	})
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value.Emit()
	}
	return s, m
}

func TestSessionSpanTLSAndAuth(t *testing.T) {
	t.Parallel()
	for _, record := range []bool{false, true} {
		h, rec := tracedSubmission(t, record)
		c := tlsSession(t, h)
		c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00wrong"), "535 5.7.8")
		c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "235")
		c.expect("QUIT", "221")
		s, a := sessionSpan(t, rec)
		if a["tls.established"] != "true" || a["tls.protocol.version"] == "" || a["tls.cipher"] == "" ||
			a["smtp.helo"] != "client.test" || a["smtp.auth.mechanism"] != "PLAIN" || a["smtp.auth.outcome"] != "success" {
			t.Errorf("record=%v: session attributes %v", record, a)
		}
		var outcomes []string
		for _, e := range s.Events() {
			for _, kv := range e.Attributes {
				if kv.Key == "smtp.auth.outcome" {
					outcomes = append(outcomes, kv.Value.AsString())
				}
				if strings.Contains(kv.Value.Emit(), alicePassword) || strings.Contains(kv.Value.Emit(), "wrong") {
					t.Errorf("a password in event %s: %s=%s", e.Name, kv.Key, kv.Value.Emit())
				}
			}
		}
		if strings.Join(outcomes, ",") != "failure,success" {
			t.Errorf("record=%v: smtp.auth events %v, want failure then success", record, outcomes)
		}
		if got, want := a["user.name"], map[bool]string{false: "", true: "alice@example.com"}[record]; got != want {
			t.Errorf("record=%v: user.name = %q, want %q", record, got, want)
		}
		for k, v := range a {
			if strings.Contains(v, alicePassword) {
				t.Errorf("a password in %s", k)
			}
		}
	}
}
