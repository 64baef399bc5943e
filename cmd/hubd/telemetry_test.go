package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/trace"

	"hubd/internal/otlptest"
)

// telemetryConfig is a hub exporting traces over OTLP/HTTP to endpoint
// and serving /metrics on promAddr.
func telemetryConfig(addr, endpoint, promAddr string) string {
	return fmt.Sprintf(`
hub {
  hostname  = "otel.example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
mailbox "u1@example.test" { maildir = "mail/u1" }
receive_connector "in" { bind = [%q] }
telemetry {
  service_instance = "child-1"
  traces {
    exporter = "otlp"
    protocol = "http/protobuf"
    endpoint = %q
    insecure = true
  }
  metrics { prometheus_listen = %q }
  logs { format = "json" }
}
`, addr, endpoint, promAddr)
}

// TestTelemetryChildProcess: a real hubd exports the smtp.session span of
// a message it received to an OTLP/HTTP receiver, serves /metrics, and
// flushes at SIGTERM: the span is there when the process has exited,
// though the batcher's 5 s delay has not passed. service.name comes from
// OTEL_SERVICE_NAME, as the block does not set it.
func TestTelemetryChildProcess(t *testing.T) {
	rcv := otlptest.New(t)
	dir := t.TempDir()
	addr, promAddr := freePort(t), freePort(t)
	cfg := writeConfig(t, dir, telemetryConfig(addr, rcv.Endpoint, promAddr))
	p := startWithEnv(t, hubdBinary, cfg, []string{"OTEL_SERVICE_NAME=hubd-from-env"}, addr, promAddr)

	if err := sendOne(addr, "otel-1", []string{"u1"}); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get("http://" + promAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	if families["target_info"] == nil || families["go_goroutines"] == nil {
		t.Errorf("/metrics lacks target_info or the Go collector: %d families", len(families))
	}

	started := time.Now()
	if err := p.stop(t, 20*time.Second); err != nil {
		t.Fatalf("hubd exit: %v", err)
	}
	sessions := rcv.SpansNamed("smtp.session")
	if len(sessions) == 0 {
		t.Fatalf("no smtp.session span at exit (%v after SIGTERM); received %d spans", time.Since(started), len(rcv.Spans()))
	}
	s := sessions[0]
	if s.Kind != trace.SpanKindServer || s.Resource["service.name"] != "hubd-from-env" ||
		s.Resource["service.instance.id"] != "child-1" || s.Resource["service.version"] != version {
		t.Errorf("smtp.session span: kind %v resource %v", s.Kind, s.Resource)
	}
	// The log is JSON (logs.format) and says where /metrics is.
	if out := p.out.String(); !strings.Contains(out, `"prometheus_metrics":"http://`+promAddr+`/metrics"`) {
		t.Errorf("log does not announce /metrics in JSON:\n%s", out)
	}
	// The listener closed with the process.
	if c, err := net.Dial("tcp", promAddr); err == nil {
		c.Close()
		t.Error("/metrics still answers after exit")
	}
}

// TestCheckDialsNothing: `hubd check` on a configuration that exports
// everywhere neither exports nor listens.
func TestCheckDialsNothing(t *testing.T) {
	rcv := otlptest.New(t)
	dir := t.TempDir()
	promAddr := freePort(t)
	cfg := writeConfig(t, dir, telemetryConfig(freePort(t), rcv.Endpoint, promAddr))
	var out bytes.Buffer
	cmd := exec.Command(hubdBinary, "check", "-paths=false", "-config", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("hubd check: %v\n%s", err, out.String())
	}
	if n := len(rcv.Spans()); n != 0 {
		t.Errorf("hubd check exported %d spans", n)
	}
	ln, err := net.Listen("tcp", promAddr)
	if err != nil {
		t.Errorf("prometheus_listen taken after hubd check: %v", err)
	} else {
		ln.Close()
	}
}

// TestRunRefusesBusyPrometheusPort: a prometheus_listen in use stops hubd
// at start with a clear error.
func TestRunRefusesBusyPrometheusPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, telemetryConfig(freePort(t), "127.0.0.1:9", busy.Addr().String()))
	out, err := exec.Command(hubdBinary, "run", "-config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "prometheus_listen "+busy.Addr().String()) {
		t.Errorf("hubd run with a busy prometheus_listen: %v\n%s", err, out)
	}
}
