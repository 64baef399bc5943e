package hubtest

import (
	"fmt"
	"net/smtp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"hubd/internal/smtpsink"
	"hubd/policy"
)

// The span tree of docs/spans.md, end to end: a message received over SMTP
// for a distribution list, expanded, deferred once by a real remote SMTP
// server (451 to the first DATA), then delivered; the spans come from the
// SDK into an in-memory recorder.

const spansHub = `
hub {
  hostname                 = "hub.example.test"
  spool_dir                = "{{dir}}/spool"
  {{dns}}
  quick_retry_interval     = "200ms"
  transient_retry_interval = "200ms"
  retry_interval           = "200ms"
}
accepted_domain "example.test" {}
mailbox "sender@example.test" { maildir = "{{dir}}/mail/sender" }
distribution_list "team@example.test" { members = ["bob@remote.test", "carol@remote.test"] }
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.1"]
  max_hop_count    = 3
  tarpit_interval  = "0s"
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "internet" {
  address_spaces = ["*"]
  dns_routing    = true
}
`

// A trace context an attacker writes into the message: never a parent.
const (
	forgedTrace  = "0af7651916cd43dd8448eb211c80319c"
	forgedParent = "00-" + forgedTrace + "-b7ad6b7169203331-01"
)

type spanHub struct {
	rec   *tracetest.SpanRecorder
	addr  string
	sink  *smtpsink.Sink
	hubID string
}

func startSpanHub(t *testing.T, recordAddresses bool) *spanHub {
	t.Helper()
	sinks, dns, port := startRemotes(t, []remote{{domain: "remote.test", opts: smtpsink.Options{TempFailFirst: 1}}})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := Start(t, spansHub, Options{DNSServers: []string{dns.Addr}, SMTPPort: port, TracerProvider: tp,
		Configure: func(c *policy.Config) { c.Telemetry.RecordAddresses = recordAddresses }})
	return &spanHub{rec: rec, addr: h.Addr(t, "apps"), sink: sinks["remote.test"]}
}

// sendTraced runs three transactions on one connection: one accepted (for
// the list, with a refused RCPT on the way and a forged traceparent header
// in the content), one whose only RCPT is refused (then RSET), and one
// refused at DATA (too many Received: fields, 554 5.4.6).
func (h *spanHub) sendTraced(t *testing.T) {
	t.Helper()
	c, err := smtp.Dial(h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Hello("client.example.test"))
	must(c.Mail("sender@example.test"))
	if err := c.Rcpt("nobody@example.test"); err == nil || !strings.HasPrefix(err.Error(), "550") {
		t.Fatalf("RCPT nobody: %v, want 550", err)
	}
	must(c.Rcpt("team@example.test"))
	w, err := c.Data()
	must(err)
	fmt.Fprintf(w, "traceparent: %s\r\nFrom: <sender@example.test>\r\nTo: <team@example.test>\r\nSubject: spans\r\n\r\nhello\r\n", forgedParent)
	must(w.Close())

	must(c.Mail("sender@example.test"))
	if err := c.Rcpt("nobody@example.test"); err == nil {
		t.Fatal("RCPT nobody accepted")
	}
	must(c.Reset())

	must(c.Mail("sender@example.test"))
	must(c.Rcpt("team@example.test"))
	w, err = c.Data()
	must(err)
	fmt.Fprint(w, "Received: from a\r\nReceived: from b\r\nReceived: from c\r\nReceived: from d\r\nSubject: loop\r\n\r\nx\r\n")
	if err := w.Close(); err == nil || !strings.HasPrefix(err.Error(), "554") {
		t.Fatalf("DATA with 4 Received: %v, want 554", err)
	}
	must(c.Quit())
}

// waitDelivered polls until the recorder holds ended delivery attempts
// that delivered both list members. (The retry may come as one attempt or
// two: each recipient's retry time has its own jitter, so a deferred pair
// can fall due apart.)
func (h *spanHub) waitDelivered(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		spans := h.rec.Ended()
		n := int64(0)
		for _, s := range spans {
			if a := attrs(s); strings.HasPrefix(s.Name(), "deliver smtp:") && a["mta.outcome"].AsString() == "delivered" {
				n += a["mta.rcpt.count"].AsInt64()
			}
		}
		if n >= 2 {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d delivery spans ended, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func named(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func childrenOf(spans []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Parent().SpanID() == parent.SpanContext().SpanID() && s.Parent().TraceID() == parent.SpanContext().TraceID() {
			out = append(out, s)
		}
	}
	return out
}

func hasEvent(s sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range s.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

func TestSpanTree(t *testing.T) {
	h := startSpanHub(t, false)
	h.sendTraced(t)
	spans := h.waitDelivered(t)

	// The session: a SERVER root, whatever the content said.
	sessions := named(spans, "smtp.session")
	if len(sessions) != 1 {
		t.Fatalf("%d smtp.session spans, want 1", len(sessions))
	}
	sess := sessions[0]
	sa := attrs(sess)
	if sess.SpanKind() != trace.SpanKindServer || sess.Parent().IsValid() || sa["smtp.connector"].AsString() != "apps" ||
		sa["client.address"].AsString() != "127.0.0.1" || sa["network.peer.address"].AsString() != "127.0.0.1" ||
		sa["server.port"].AsInt64() == 0 || sa["client.port"].AsInt64() == 0 || sa["smtp.helo"].AsString() != "client.example.test" {
		t.Errorf("smtp.session kind=%v parent=%v attrs=%v", sess.SpanKind(), sess.Parent(), sa)
	}

	// Three transactions, children of the session, in order.
	txs := named(spans, "smtp.transaction")
	if len(txs) != 3 {
		t.Fatalf("%d smtp.transaction spans, want 3", len(txs))
	}
	for _, tx := range txs {
		if tx.Parent().SpanID() != sess.SpanContext().SpanID() || tx.SpanKind() != trace.SpanKindServer {
			t.Errorf("transaction parent %v kind %v, want the session, SERVER", tx.Parent().SpanID(), tx.SpanKind())
		}
	}
	var ok, rcptRefused, dataRefused sdktrace.ReadOnlySpan
	for _, tx := range txs {
		switch attrs(tx)["smtp.response.code"].AsInt64() {
		case 250:
			ok = tx
		case 550:
			rcptRefused = tx
		case 554:
			dataRefused = tx
		}
	}
	if ok == nil || rcptRefused == nil || dataRefused == nil {
		t.Fatalf("transactions by reply: ok=%v rcpt=%v data=%v", ok != nil, rcptRefused != nil, dataRefused != nil)
	}
	oa := attrs(ok)
	queueID := oa["mta.queue_id"].AsString()
	if queueID == "" || oa["smtp.rcpt.count"].AsInt64() != 1 || oa["smtp.response.enhanced_code"].AsString() != "2.0.0" ||
		oa["mta.message.size"].AsInt64() == 0 || oa["error.type"].Type() != attribute.INVALID || !hasEvent(ok, "smtp.refused") {
		t.Errorf("accepted transaction attrs=%v events=%v", oa, ok.Events())
	}
	if a := attrs(rcptRefused); a["error.type"].AsString() != "5.1.1" || a["smtp.response.enhanced_code"].AsString() != "5.1.1" {
		t.Errorf("RCPT-refused transaction attrs=%v", a)
	}
	if a := attrs(dataRefused); a["error.type"].AsString() != "5.4.6" {
		t.Errorf("DATA-refused transaction attrs=%v", a)
	}

	// The enqueue: PRODUCER child of the accepted transaction.
	var enq sdktrace.ReadOnlySpan
	for _, s := range childrenOf(spans, ok) {
		if s.Name() == "hub.enqueue" {
			enq = s
		}
	}
	if enq == nil {
		t.Fatal("no hub.enqueue child of the accepted transaction")
	}
	if ea := attrs(enq); enq.SpanKind() != trace.SpanKindProducer || ea["messaging.operation.type"].AsString() != "send" ||
		ea["messaging.message.id"].AsString() != queueID || ea["hub.queue.batch_size"].AsInt64() < 1 {
		t.Errorf("hub.enqueue kind=%v attrs=%v", enq.SpanKind(), ea)
	}

	linksTo := func(s sdktrace.ReadOnlySpan, target sdktrace.ReadOnlySpan) bool {
		for _, l := range s.Links() {
			if l.SpanContext.TraceID() == target.SpanContext().TraceID() && l.SpanContext.SpanID() == target.SpanContext().SpanID() {
				return true
			}
		}
		return false
	}

	// The categorizer: a new root linked to the receiving span, with the
	// list expansion and the route among its events.
	var cat sdktrace.ReadOnlySpan
	for _, s := range named(spans, "categorize") {
		if attrs(s)["mta.queue_id"].AsString() == queueID && hasEvent(s, "categorizer.expand") {
			cat = s
		}
	}
	if cat == nil {
		t.Fatal("no categorize span with an expand event for the message")
	}
	if cat.Parent().IsValid() || !linksTo(cat, ok) || !hasEvent(cat, "categorizer.route") {
		t.Errorf("categorize parent=%v links=%v events=%v", cat.Parent(), cat.Links(), cat.Events())
	}

	// Two attempts: CONSUMER roots of new traces, each linked to the
	// receiving span; the first deferred by the remote's 451.
	var attempts []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if strings.HasPrefix(s.Name(), "deliver smtp:") && attrs(s)["mta.queue_id"].AsString() == queueID {
			attempts = append(attempts, s)
		}
	}
	sort.Slice(attempts, func(i, j int) bool { return attempts[i].StartTime().Before(attempts[j].StartTime()) })
	if len(attempts) < 2 || len(attempts) > 3 {
		for _, s := range spans {
			t.Logf("%s parent=%v %v", s.Name(), s.Parent().SpanID(), s.Attributes())
		}
		t.Fatalf("%d delivery attempts, want the deferred one and one or two that delivered", len(attempts))
	}
	seen := map[trace.TraceID]bool{ok.SpanContext().TraceID(): true}
	for i, a := range attempts {
		aa := attrs(a)
		if a.SpanKind() != trace.SpanKindConsumer || a.Parent().IsValid() || !linksTo(a, ok) ||
			aa["messaging.operation.type"].AsString() != "process" || aa["messaging.message.id"].AsString() != queueID ||
			aa["messaging.destination.name"].AsString() == "" || aa["mta.attempt"].AsInt64() != int64(min(i, 1)+1) {
			t.Errorf("attempt %d: kind=%v parent=%v links=%v attrs=%v", i+1, a.SpanKind(), a.Parent(), a.Links(), aa)
		}
		if seen[a.SpanContext().TraceID()] {
			t.Errorf("attempt %d shares a trace with the receipt or another attempt", i+1)
		}
		seen[a.SpanContext().TraceID()] = true
		wantCode, wantOutcome := int64(451), "deferred"
		if i > 0 {
			wantCode, wantOutcome = 250, "delivered"
		}
		if aa["mta.outcome"].AsString() != wantOutcome {
			t.Errorf("attempt %d outcome %v, want %s", i+1, aa["mta.outcome"], wantOutcome)
		}
		var dnsSpan, client sdktrace.ReadOnlySpan
		for _, c := range childrenOf(spans, a) {
			switch c.Name() {
			case "dns.lookup MX":
				dnsSpan = c
			case "smtp.client":
				client = c
			}
		}
		if client == nil {
			t.Fatalf("attempt %d: no smtp.client child", i+1)
		}
		// A fresh connection looks the MX up first; the retry may reuse
		// the idle connection the first attempt left (smtpout's pool).
		if reused := attrs(client)["mta.connection.reused"].AsBool(); reused != (dnsSpan == nil) {
			t.Fatalf("attempt %d: reused=%v but dns span=%v", i+1, reused, dnsSpan != nil)
		}
		if i == 0 && dnsSpan == nil {
			t.Fatal("attempt 1 made no DNS lookup")
		}
		if dnsSpan != nil && (dnsSpan.SpanKind() != trace.SpanKindClient || attrs(dnsSpan)["dns.question.name"].AsString() != "remote.test") {
			t.Errorf("attempt %d dns span kind=%v attrs=%v", i+1, dnsSpan.SpanKind(), attrs(dnsSpan))
		}
		ca := attrs(client)
		if client.SpanKind() != trace.SpanKindClient || ca["server.address"].AsString() != "mx.remote.test" ||
			ca["network.peer.address"].AsString() != "127.0.0.2" || ca["server.port"].AsInt64() == 0 ||
			ca["smtp.response.code"].AsInt64() != wantCode {
			t.Errorf("attempt %d smtp.client kind=%v attrs=%v", i+1, client.SpanKind(), ca)
		}
	}

	// The forged traceparent is nowhere, and no address is in any
	// attribute or event by default.
	for _, s := range spans {
		if s.SpanContext().TraceID().String() == forgedTrace || s.Parent().TraceID().String() == forgedTrace {
			t.Errorf("span %q is in the trace a mail header named", s.Name())
		}
		for _, l := range s.Links() {
			if l.SpanContext.TraceID().String() == forgedTrace {
				t.Errorf("span %q links to the trace a mail header named", s.Name())
			}
		}
		kvs := s.Attributes()
		for _, e := range s.Events() {
			kvs = append(kvs, e.Attributes...)
		}
		for _, kv := range kvs {
			if strings.Contains(kv.Value.Emit(), "@") {
				t.Errorf("span %q: address in %s=%s without record_addresses", s.Name(), kv.Key, kv.Value.Emit())
			}
		}
	}
}

func TestSpanAddressesWhenRecorded(t *testing.T) {
	h := startSpanHub(t, true)
	h.sendTraced(t)
	spans := h.waitDelivered(t)
	var ok sdktrace.ReadOnlySpan
	for _, tx := range named(spans, "smtp.transaction") {
		if attrs(tx)["smtp.response.code"].AsInt64() == 250 {
			ok = tx
		}
	}
	if ok == nil {
		t.Fatal("no accepted transaction")
	}
	a := attrs(ok)
	if a["smtp.mail.from"].AsString() != "sender@example.test" ||
		fmt.Sprint(a["smtp.rcpt.to"].AsStringSlice()) != "[team@example.test]" {
		t.Errorf("accepted transaction attrs=%v, want the envelope addresses", a)
	}
	found := false
	for _, c := range named(spans, "categorize") {
		for _, e := range c.Events() {
			for _, kv := range e.Attributes {
				found = found || (kv.Key == "mta.rcpt.address" && kv.Value.AsString() == "bob@remote.test")
			}
		}
	}
	if !found {
		t.Error("categorize events do not name bob@remote.test with record_addresses")
	}
}
