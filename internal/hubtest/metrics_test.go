package hubtest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"hubd/hub/ops"
	"hubd/internal/smtpsink"
)

// The metrics of issue 10, end to end: a hub with the OTel SDK and the
// Prometheus exporter on a private registry, served by promhttp on a
// loopback port, scraped and parsed with the Prometheus text parser after
// known traffic. docs/metrics.md describes every metric checked here.

// promEndpoint is a MeterProvider whose metrics a test scrapes over HTTP.
type promEndpoint struct {
	Provider *sdkmetric.MeterProvider
	URL      string
}

func startPromEndpoint(t testing.TB) *promEndpoint {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(func() {
		srv.Close()
		mp.Shutdown(context.Background())
	})
	return &promEndpoint{Provider: mp, URL: srv.URL + "/metrics"}
}

// scrape fetches and parses the endpoint's text exposition.
func (p *promEndpoint) scrape(t testing.TB) scraped {
	t.Helper()
	resp, err := http.Get(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", p.URL, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	return fams
}

// scraped is one scrape's metric families by name.
type scraped map[string]*dto.MetricFamily

// value is the sample of family name whose labels include want (label,
// value pairs): a counter's or gauge's value, a histogram's count. It
// sums over the samples that match. ok is false when none does.
func (s scraped) value(name string, want ...string) (v float64, ok bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue next
			}
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v, ok
}

func (s scraped) names() []string {
	var out []string
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

const metricsHub = `
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
mailbox "alice@example.test"  { maildir = "{{dir}}/mail/alice" }
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.0/8"]
  permissions { anonymous = ["submit", "relay"] }
}
receive_connector "closed" {
  bind             = ["127.0.0.9:0"]
  remote_ip_ranges = ["127.0.0.0/8"]
  tarpit_interval  = "10ms"
  permissions { anonymous = [] }
}
send_connector "remote" {
  address_spaces = ["ok.test", "bad.test"]
  dns_routing    = true
}
`

// TestMetricsAfterKnownTraffic: after a known mix of traffic, the scrape
// shows exact counts, and the queue depth gauges agree with
// transport.Stats and the operator's Queues.
func TestMetricsAfterKnownTraffic(t *testing.T) {
	sinks, dns, port := startRemotes(t, []remote{
		{domain: "ok.test", opts: smtpsink.Options{TempFailFirst: 1}},
		{domain: "bad.test", opts: smtpsink.Options{Rcpt: func(string) error {
			return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
		}}},
	})
	prom := startPromEndpoint(t)
	h := Start(t, metricsHub, Options{DNSServers: []string{dns.Addr}, SMTPPort: port, MeterProvider: prom.Provider})
	ctx := ctxTimeout(t, 20*time.Second)

	// Two reloads: one applied, one refused (a broken file).
	if res, err := h.Reload(ctx); err != nil || !res.Applied {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	path := filepath.Join(h.Dir, "hubd.hcl")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(good, []byte("\nhub {\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, _ := h.Reload(ctx); res.Applied {
		t.Fatal("a broken configuration was applied")
	}
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}

	// N = 6 messages accepted on "apps": two for a local mailbox, one
	// deferred once then delivered by ok.test, one refused by bad.test (a
	// DSN to the sender follows), two for a domain without a route (the
	// unreachable queue; one of them is then held).
	apps := h.Addr(t, "apps")
	send(t, apps, "sender@example.test", "alice@example.test")
	send(t, apps, "sender@example.test", "alice@example.test")
	send(t, apps, "sender@example.test", "u@ok.test")
	send(t, apps, "sender@example.test", "u@bad.test")
	send(t, apps, "sender@example.test", "a@nowhere.test")
	send(t, apps, "sender@example.test", "b@nowhere.test")
	// M = 3 transactions refused at MAIL on "closed" (550 5.7.1, tarpitted).
	const refused = 3
	for range refused {
		c, err := smtp.Dial(h.Addr(t, "closed"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("x@example.test"); err == nil || !strings.HasPrefix(err.Error(), "550") || !strings.Contains(err.Error(), "5.7.1") {
			t.Fatalf("MAIL on the closed connector: %v", err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}

	sinks["ok.test"].WaitFor(t, 1, 10*time.Second)
	WaitMaildir(t, filepath.Join(h.Dir, "mail/alice"), 2, 10*time.Second)
	WaitMaildir(t, filepath.Join(h.Dir, "mail/sender"), 1, 10*time.Second) // the DSN
	list, err := h.Transport.Messages(ctx, ops.MessageFilter{To: "b@nowhere.test"})
	if err != nil || len(list.Messages) != 1 {
		t.Fatalf("the message to b@nowhere.test: %+v, %v", list, err)
	}
	if err := h.Transport.Hold(ctx, list.Messages[0].ID); err != nil {
		t.Fatal(err)
	}
	// Settled: only the two messages for nowhere.test are left, and every
	// session has ended.
	var s scraped
	for deadline := time.Now().Add(10 * time.Second); ; {
		st := h.Transport.Stats()
		s = prom.scrape(t)
		active, _ := s.value("hubd_smtp_connections_active")
		sessions, _ := s.value("hubd_smtp_sessions_total")
		if st.Messages == 2 && st.PendingRecipients == 2 && active == 0 && sessions == 6+refused {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: stats %+v, %v connections active, %v sessions ended", st, active, sessions)
		}
		time.Sleep(20 * time.Millisecond) // polling a deadline, not waiting for a guess
	}

	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"hubd_smtp_messages_accepted_total", []string{"connector", "apps"}, 6},
		{"hubd_smtp_transactions_total", []string{"connector", "apps", "outcome", "accepted", "reply_class", "2xx"}, 6},
		{"hubd_smtp_transactions_total", []string{"connector", "closed", "outcome", "refused", "reply_class", "5xx"}, refused},
		{"hubd_smtp_transactions_total", nil, 6 + refused},
		{"hubd_smtp_sessions_total", []string{"connector", "apps", "outcome", "quit"}, 6},
		{"hubd_smtp_sessions_total", []string{"connector", "closed", "outcome", "quit"}, refused},
		{"hubd_smtp_connections_active", []string{"connector", "apps"}, 0},
		{"hubd_smtp_tarpit_total", []string{"connector", "closed"}, refused},
		{"hubd_delivery_attempts_total", []string{"next_hop", "smtp:remote[mx:ok.test]", "outcome", "deferred"}, 1},
		{"hubd_delivery_attempts_total", []string{"next_hop", "smtp:remote[mx:ok.test]", "outcome", "delivered"}, 1},
		{"hubd_delivery_attempts_total", []string{"next_hop", "smtp:remote[mx:bad.test]", "outcome", "failed"}, 1},
		{"hubd_delivery_attempts_total", []string{"next_hop", "maildir", "outcome", "delivered"}, 3}, // alice twice, the DSN
		{"hubd_delivery_attempts_total", nil, 6},
		{"hubd_delivery_duration_seconds", []string{"kind", "smtp"}, 3},
		{"hubd_delivery_duration_seconds", []string{"kind", "maildir"}, 3},
		{"hubd_delivery_end_to_end_seconds", nil, 4}, // alice twice, ok.test, the DSN
		{"hubd_dsn_queued_total", []string{"kind", "failed"}, 1},
		{"hubd_dsn_queued_total", nil, 1},
		{"hubd_queue_messages", nil, 2},
		{"hubd_queue_held_messages", nil, 1},
		{"hubd_queue_poison_messages", nil, 0},
		{"hubd_queue_recipients", []string{"queue", "unreachable", "state", "deferred"}, 1},
		{"hubd_queue_recipients", []string{"queue", "unreachable", "state", "held"}, 1},
		{"hubd_backpressure_level", nil, 0},
		{"hubd_config_reloads_total", []string{"outcome", "applied"}, 1},
		{"hubd_config_reloads_total", []string{"outcome", "refused"}, 1},
	}
	for _, w := range want {
		got, ok := s.value(w.name, w.labels...)
		if !ok || got != w.value {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	if got, _ := s.value("hubd_smtp_accepted_bytes_total", "connector", "apps"); got < 6*60 {
		t.Errorf("hubd_smtp_accepted_bytes_total = %v for six messages", got)
	}
	if got, _ := s.value("hubd_queue_commit_batch_size"); got < 1 {
		t.Errorf("no group commit observed: %v", got)
	}
	// The log spool: log/ is fsynced when this process's first segment is
	// created, and every group commit is one fdatasync of the segment.
	if got, _ := s.value("hubd_queue_fsync_duration_seconds", "target", "directory"); got < 1 {
		t.Errorf("no directory fsync observed: %v", got)
	}
	if got, _ := s.value("hubd_queue_fsync_duration_seconds", "target", "segment"); got < 1 {
		t.Errorf("no segment fdatasync observed: %v", got)
	}
	if got, ok := s.value("hubd_queue_oldest_message_age_seconds"); !ok || got < 0 || got > 60 {
		t.Errorf("hubd_queue_oldest_message_age_seconds = %v (present %v)", got, ok)
	}

	// The depth agrees with the operator's view, queue by queue.
	st := h.Transport.Stats()
	queues, err := h.Transport.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, q := range queues {
		got, _ := s.value("hubd_queue_recipients", "queue", q.Name)
		if got != float64(q.Recipients) {
			t.Errorf("queue %s: hubd_queue_recipients %v, Queues says %d recipients", q.Name, got, q.Recipients)
		}
		total += got
	}
	if all, _ := s.value("hubd_queue_recipients"); all != total || total != float64(st.PendingRecipients) {
		t.Errorf("hubd_queue_recipients sums to %v (%v in the queues listed), Stats says %d pending", all, total, st.PendingRecipients)
	}
	if got, _ := s.value("hubd_queue_messages"); got != float64(st.Messages) {
		t.Errorf("hubd_queue_messages %v, Stats %d", got, st.Messages)
	}
	if got, _ := s.value("hubd_queue_held_messages"); got != float64(st.Held) {
		t.Errorf("hubd_queue_held_messages %v, Stats %d", got, st.Held)
	}
	checkDocsAndDashboard(t, s)
	if t.Failed() {
		t.Logf("metric families: %s", strings.Join(s.names(), " "))
		if out, err := http.Get(prom.URL); err == nil {
			b, _ := io.ReadAll(out.Body)
			out.Body.Close()
			t.Logf("scrape:\n%s", b)
		}
	}
}

// checkDocsAndDashboard: every hubd metric of the scrape is documented in
// docs/metrics.md; every documented gauge and histogram is in the scrape
// (a counter appears at its first event); the Grafana dashboard is valid
// JSON with a Prometheus data-source variable that every query uses, and
// its expressions name only documented metrics.
func checkDocsAndDashboard(t *testing.T, s scraped) {
	t.Helper()
	docs, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `(hubd_[a-z0-9_]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(string(docs), -1) {
		documented[m[1]] = true
	}
	if len(documented) < 20 {
		t.Fatalf("docs/metrics.md documents %d metrics", len(documented))
	}
	for name := range s {
		if strings.HasPrefix(name, "hubd_") && !documented[name] {
			t.Errorf("%s is scraped but not in docs/metrics.md", name)
		}
	}
	for name := range documented {
		if s[name] == nil && !strings.HasSuffix(name, "_total") {
			t.Errorf("%s is documented but not in the scrape", name)
		}
	}

	raw, err := os.ReadFile("../../examples/grafana/hubd.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct{ Name, Type, Query string } `json:"list"`
		} `json:"templating"`
		Panels []grafanaPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("examples/grafana/hubd.json: %v", err)
	}
	hasVar := false
	for _, v := range dash.Templating.List {
		hasVar = hasVar || (v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus")
	}
	if !hasVar {
		t.Error("the dashboard has no Prometheus data-source variable")
	}
	metricName := regexp.MustCompile(`hubd_[a-z0-9_]+`)
	exprs := 0
	var walk func([]grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: data source %q, want the variable", p.Title, p.Datasource.UID)
			}
			for _, tg := range p.Targets {
				exprs++
				if tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: a query's data source is %q", p.Title, tg.Datasource.UID)
				}
				for _, name := range metricName.FindAllString(tg.Expr, -1) {
					base := name
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if b, ok := strings.CutSuffix(name, suffix); ok && documented[b] {
							base = b
						}
					}
					if !documented[base] {
						t.Errorf("panel %q: %s is not a documented metric (%s)", p.Title, name, tg.Expr)
					}
				}
			}
		}
	}
	walk(dash.Panels)
	if exprs < 15 {
		t.Errorf("the dashboard has %d queries", exprs)
	}
}

type grafanaPanel struct {
	Type, Title string
	Datasource  struct{ UID string } `json:"datasource"`
	Targets     []struct {
		Expr       string
		Datasource struct{ UID string } `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}
