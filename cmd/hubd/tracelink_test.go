package main

import (
	"fmt"
	"net/smtp"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"go.opentelemetry.io/otel/trace"

	"hubd/internal/otlptest"
	"hubd/internal/smtpsink"
)

// TestDeliveryLinkSurvivesRestart: a real hubd exporting OTLP/HTTP to a
// receiver in the test takes a message whose next hop defers it, and is
// restarted before the message is delivered. The delivering attempt, made
// by the second process, is a CONSUMER span in a new trace whose link
// points at the receiving span exported by the first process: the trace
// context travelled through the spool, not through memory.
func TestDeliveryLinkSurvivesRestart(t *testing.T) {
	rcv := otlptest.New(t)
	var accept atomic.Bool
	var attempts atomic.Int32
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(string) error {
		attempts.Add(1)
		if accept.Load() {
			return nil
		}
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try later"}
	}})
	dir := t.TempDir()
	addr := freePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname             = "otel.example.test"
  spool_dir            = "spool"
  quick_retry_interval = "300ms"
  retry_interval       = "300ms"
}
accepted_domain "example.test" {}
receive_connector "in" {
  bind             = [%q]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = ["[127.0.0.1]:%d"]
  tls            = "none"
}
telemetry {
  traces {
    exporter = "otlp"
    protocol = "http/protobuf"
    endpoint = %q
    insecure = true
  }
}
`, addr, sink.Port(), rcv.Endpoint))

	p := startBinary(t, hubdBinary, cfg, addr)
	msg := "Subject: traced\r\nMessage-ID: <traced@example.test>\r\n\r\nbody\r\n"
	if err := smtp.SendMail(addr, nil, "sender@example.test", []string{"rcpt@remote.test"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for attempts.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no delivery attempt before the restart")
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if err := p.stop(t, 20*time.Second); err != nil { // SIGTERM flushes the spans
		t.Fatalf("first hubd: %v", err)
	}
	received := rcv.WaitSpan(t, "smtp.transaction", 10*time.Second)
	if received.Attributes["mta.queue_id"] == nil {
		t.Fatalf("receiving span without a queue id: %+v", received.Attributes)
	}

	accept.Store(true)
	p = startBinary(t, hubdBinary, cfg, addr)
	sink.WaitFor(t, 1, 20*time.Second)
	if err := p.stop(t, 20*time.Second); err != nil {
		t.Fatalf("second hubd: %v", err)
	}

	spans := rcv.WaitSpans(t, 10*time.Second, func(ss []otlptest.Span) bool {
		for _, s := range ss {
			if s.Kind == trace.SpanKindConsumer && s.Attributes["mta.outcome"] == "delivered" {
				return true
			}
		}
		return false
	})
	var delivered *otlptest.Span
	for i, s := range spans {
		if s.Kind == trace.SpanKindConsumer && s.Attributes["mta.outcome"] == "delivered" {
			delivered = &spans[i]
		}
	}
	if delivered.ParentSpanID != "" || delivered.TraceID == received.TraceID {
		t.Errorf("the delivering attempt is not a new trace: parent %q, trace %s (receipt's %s)",
			delivered.ParentSpanID, delivered.TraceID, received.TraceID)
	}
	linked := false
	for _, l := range delivered.Links {
		linked = linked || (l.TraceID == received.TraceID && l.SpanID == received.SpanID)
	}
	if !linked {
		t.Errorf("the delivering attempt %q links %+v, want the receiving span %s/%s",
			delivered.Name, delivered.Links, received.TraceID, received.SpanID)
	}
	t.Logf("received in trace %s (span %s); delivered after a restart in trace %s (%s, attempt %v), linked back",
		received.TraceID, received.SpanID, delivered.TraceID, delivered.Name, delivered.Attributes["mta.attempt"])
}
