package main

// End to end: the /metrics endpoint of a hubd child process after known
// traffic, parsed with Prometheus' text parser, agrees with the traffic and
// with what hubctl shows of the same queue.

import (
	"fmt"
	"net/http"
	"net/smtp"
	"net/textproto"
	"testing"

	gosmtp "github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"hubd/hub/ops"
	"hubd/internal/admin"
	"hubd/internal/smtpsink"
)

func TestMetricsAgreeWithHubctl(t *testing.T) {
	dir := t.TempDir()
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(string) error {
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try later"}
	}})
	prom := freePort(t)
	in, cfg, sock := relayHub(t, dir, sink.Port(), `  quick_retry_interval = "1h"`, "",
		fmt.Sprintf(`telemetry {
  metrics { prometheus_listen = %q }
}
`, prom))
	startHubd(t, cfg, sock)
	c := ctl{t, sock}

	// Three messages accepted (two recipients each), one refused at MAIL.
	for i := range 3 {
		to := []string{fmt.Sprintf("a%d@remote.test", i), fmt.Sprintf("b%d@remote.test", i)}
		if err := smtp.SendMail(in, nil, "sender@example.test", to, []byte("Subject: m\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	// RFC 1870 §6.1: a declared size over the limit is refused at MAIL.
	conn, err := textproto.Dial("tcp", in)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		cmd  string
		code int
	}{{"", 220}, {"EHLO client.test", 250}, {"MAIL FROM:<s@example.test> SIZE=999999999", 552}, {"QUIT", 221}} {
		if step.cmd != "" {
			conn.PrintfLine("%s", step.cmd)
		}
		if _, _, err := conn.ReadResponse(step.code); err != nil {
			t.Fatalf("%q: %v", step.cmd, err)
		}
	}
	conn.Close()
	waitFor(t, "six deferred recipients", func() bool {
		n := 0
		for _, m := range c.messages("--state", "deferred") {
			n += len(m.Recipients)
		}
		return n == 6
	})

	families := scrape(t, "http://"+prom+"/metrics")
	if got := sum(families, "hubd_smtp_messages_accepted_total", map[string]string{"connector": "in"}); got != 3 {
		t.Errorf("hubd_smtp_messages_accepted_total{connector=in} = %v, want 3", got)
	}
	if got := sum(families, "hubd_smtp_transactions_total", map[string]string{"connector": "in", "outcome": "accepted"}); got != 3 {
		t.Errorf("accepted transactions = %v, want 3", got)
	}
	if got := sum(families, "hubd_smtp_transactions_total", map[string]string{"connector": "in", "outcome": "refused"}); got != 1 {
		t.Errorf("refused transactions = %v, want 1", got)
	}

	// hubctl counts the refusal too, though go-smtp made it.
	var cs []admin.ConnectorInfo
	c.json(&cs, "connector", "list")
	if len(cs) != 1 || cs[0].Accepted != 3 || cs[0].Refused != 1 {
		t.Errorf("connector list: %+v", cs)
	}

	// The depth per queue is what hubctl queue list shows, and the totals
	// what hubctl status shows.
	var qs []ops.QueueInfo
	c.json(&qs, "queue", "list")
	for _, q := range qs {
		got := sum(families, "hubd_queue_recipients", map[string]string{"queue": q.Name})
		if int(got) != q.Recipients {
			t.Errorf("queue %s: hubd_queue_recipients %v, hubctl %d", q.Name, got, q.Recipients)
		}
	}
	var st admin.Status
	c.json(&st, "status")
	if got := sum(families, "hubd_queue_messages", nil); int(got) != st.Messages || st.Messages != 3 {
		t.Errorf("hubd_queue_messages %v, hubctl status %d (want 3)", got, st.Messages)
	}
	if got := sum(families, "hubd_queue_recipients", nil); int(got) != st.Recipients || st.Recipients != 6 {
		t.Errorf("hubd_queue_recipients %v, hubctl status %d recipients (want 6)", got, st.Recipients)
	}
	if got := sum(families, "hubd_queue_recipients", map[string]string{"state": "deferred"}); got != 6 {
		t.Errorf("deferred recipients %v, want 6", got)
	}
}

// scrape fetches url and parses the Prometheus text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %v", url, resp.StatusCode, err)
	}
	return families
}

// sum adds the values of a family's samples whose labels include want.
func sum(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
	total := 0.0
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		}
	}
	return total
}
