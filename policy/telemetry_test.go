package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

const telemetryBase = "hub {\n hostname = \"h.example.com\"\n spool_dir = \"var/spool\"\n}\nreceive_connector \"in\" { bind = [\"127.0.0.1:10025\"] }\n"

// loadTelemetry loads telemetryBase+src with env as the whole environment.
func loadTelemetry(t *testing.T, dir, src string, env map[string]string) (*Telemetry, hcl.Diagnostics) {
	t.Helper()
	l := newLoader()
	l.lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	l.parse("t.hcl", []byte(telemetryBase+src), dir)
	cfg, err := l.finish()
	if err != nil {
		var le *LoadError
		if !errors.As(err, &le) {
			t.Fatal(err)
		}
		return nil, le.Diags
	}
	return &cfg.Telemetry, nil
}

func TestTelemetryDefaultsDialNothing(t *testing.T) {
	tel, diags := loadTelemetry(t, t.TempDir(), "", nil)
	if diags != nil {
		t.Fatal(diags)
	}
	host, _ := os.Hostname()
	want := Telemetry{ServiceName: "hubd", ServiceInstance: host,
		Traces:  TelemetryTraces{Exporter: ExporterNone, SamplingRatio: 1},
		Metrics: TelemetryMetrics{Interval: 60 * time.Second},
		Logs:    TelemetryLogs{Format: "text"}}
	// An endpoint alone enables nothing: an exporter must be chosen.
	for _, env := range []map[string]string{nil, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}} {
		tel, diags = loadTelemetry(t, t.TempDir(), "", env)
		if diags != nil {
			t.Fatal(diags)
		}
		if !reflect.DeepEqual(*tel, want) {
			t.Errorf("env %v:\n got %+v\nwant %+v", env, *tel, want)
		}
	}
}

func TestTelemetryBlockValues(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("-----BEGIN CERTIFICATE-----\n"), 0o644)
	tel, diags := loadTelemetry(t, dir, `telemetry {
  service_name     = "mx"
  service_instance = "mx-1"
  record_addresses = true
  traces {
    exporter       = "otlp"
    protocol       = "grpc"
    endpoint       = "collector.example:4317"
    headers        = { authorization = "Bearer t" }
    ca_file        = "ca.pem"
    sampling_ratio = 0.25
  }
  metrics {
    prometheus_listen = "127.0.0.1:9464"
    otlp {
      endpoint = "http://collector.example:4318"
      interval = "15s"
    }
  }
  logs {
    format = "json"
    otlp { endpoint = "https://logs.example/custom/path" }
  }
}`, nil)
	if diags != nil {
		t.Fatal(diags)
	}
	if !tel.RecordAddresses || tel.ServiceName != "mx" || tel.ServiceInstance != "mx-1" {
		t.Errorf("service: %+v", tel)
	}
	wantTraces := TelemetryTraces{Exporter: ExporterOTLP, SamplingRatio: 0.25, OTLP: OTLPTarget{Protocol: ProtocolGRPC,
		Endpoint: "collector.example:4317", Headers: map[string]string{"authorization": "Bearer t"}, CAFile: filepath.Join(dir, "ca.pem")}}
	if !reflect.DeepEqual(tel.Traces, wantTraces) {
		t.Errorf("traces:\n got %+v\nwant %+v", tel.Traces, wantTraces)
	}
	m := tel.Metrics
	if m.PrometheusListen != "127.0.0.1:9464" || m.Interval != 15*time.Second || m.OTLP == nil ||
		!reflect.DeepEqual(*m.OTLP, OTLPTarget{Protocol: ProtocolHTTPProtobuf, Endpoint: "collector.example:4318", Insecure: true}) {
		t.Errorf("metrics: %+v %+v", m, m.OTLP)
	}
	lg := tel.Logs
	if lg.Format != "json" || lg.OTLP == nil ||
		!reflect.DeepEqual(*lg.OTLP, OTLPTarget{Protocol: ProtocolHTTPProtobuf, Endpoint: "logs.example:443", URLPath: "/custom/path"}) {
		t.Errorf("logs: %+v %+v", lg, lg.OTLP)
	}
}

func TestTelemetryDiagnostics(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ src, want string }{
		{`telemetry { traces { exporter = "jaeger" } }`, "Invalid exporter"},
		{`telemetry { traces { sampling_ratio = 1.5 } }`, "Invalid sampling_ratio"},
		{`telemetry { traces { protocol = "http/json" } }`, "Invalid protocol"},
		{`telemetry { traces { endpoint = "ftp://x:1" } }`, "Invalid endpoint"},
		{`telemetry { traces { endpoint = "nohostport" } }`, "Invalid endpoint"},
		{`telemetry { traces { headers = ["a"] } }`, "Expected a map of strings"},
		{`telemetry { traces { ca_file = "missing.pem" } }`, "Missing ca_file"},
		{"telemetry { traces {\n endpoint = \"http://c:4318\"\n insecure = false\n } }", "Conflicting insecure"},
		{`telemetry { metrics { prometheus_listen = "9464" } }`, "Invalid prometheus_listen"},
		{"telemetry {\n metrics {\n  otlp { interval = \"10ms\" }\n }\n}", "Invalid interval"},
		{"telemetry {\n metrics {\n  otlp { interval = \"soon\" }\n }\n}", "Invalid duration"},
		{`telemetry { logs { format = "xml" } }`, "Invalid format"},
		{"telemetry {\n logs {\n  otlp { interval = \"1s\" }\n }\n}", "Unsupported argument"},
		{`telemetry { service_name = "" }`, "Invalid service_name"},
		{`telemetry { bogus = 1 }`, "Unsupported argument"},
		{"telemetry {}\ntelemetry {}", "Duplicate telemetry block"},
	} {
		src := c.src
		if strings.Count(src, "{") > 1 && strings.HasPrefix(src, "telemetry { ") {
			// HCL wants nested blocks on lines of their own.
			src = "telemetry {\n" + strings.TrimSuffix(strings.TrimPrefix(src, "telemetry { "), " }") + "\n}"
		}
		_, diags := loadTelemetry(t, dir, src, nil)
		if !diags.HasErrors() || !strings.Contains(diags.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.src, diags, c.want)
			continue
		}
		// Every error of the block points into the file at the block's line.
		if s := diags.Errs()[0].(*hcl.Diagnostic).Subject; s == nil || s.Filename != "t.hcl" || s.Start.Line < 6 {
			t.Errorf("%s: subject %v, want a position in t.hcl", c.src, s)
		}
	}
	// All errors at once.
	_, diags := loadTelemetry(t, dir, `telemetry {
  traces { exporter = "x" }
  logs { format = "y" }
}`, nil)
	if len(diags.Errs()) != 2 {
		t.Errorf("want 2 errors, got %v", diags)
	}
}

func TestTelemetryEnvironment(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{
		"OTEL_SERVICE_NAME":                   "from-env",
		"OTEL_RESOURCE_ATTRIBUTES":            "deployment.environment=prod,service.instance.id=pod-7",
		"OTEL_TRACES_EXPORTER":                "otlp",
		"OTEL_TRACES_SAMPLER":                 "parentbased_traceidratio",
		"OTEL_TRACES_SAMPLER_ARG":             "0.5",
		"OTEL_EXPORTER_OTLP_ENDPOINT":         "http://collector:4318/base/",
		"OTEL_EXPORTER_OTLP_HEADERS":          "api-key=a%20b,x=y",
		"OTEL_METRICS_EXPORTER":               "prometheus,otlp",
		"OTEL_EXPORTER_PROMETHEUS_HOST":       "127.0.0.1",
		"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://metrics:4317",
		"OTEL_METRIC_EXPORT_INTERVAL":         "5000",
		"OTEL_LOGS_EXPORTER":                  "otlp",
	}
	tel, diags := loadTelemetry(t, dir, "", env)
	if diags != nil {
		t.Fatal(diags)
	}
	if tel.ServiceName != "from-env" || tel.ServiceInstance != "pod-7" || tel.Traces.SamplingRatio != 0.5 {
		t.Errorf("service/sampling: %+v", tel)
	}
	wantTrace := OTLPTarget{Protocol: ProtocolHTTPProtobuf, Endpoint: "collector:4318", URLPath: "/base/v1/traces",
		Insecure: true, Headers: map[string]string{"api-key": "a b", "x": "y"}}
	if tel.Traces.Exporter != ExporterOTLP || !reflect.DeepEqual(tel.Traces.OTLP, wantTrace) {
		t.Errorf("traces from env:\n got %+v\nwant %+v", tel.Traces, wantTrace)
	}
	if m := tel.Metrics; m.PrometheusListen != "127.0.0.1:9464" || m.Interval != 5*time.Second || m.OTLP == nil ||
		m.OTLP.Protocol != ProtocolGRPC || m.OTLP.Endpoint != "metrics:4317" || m.OTLP.Insecure {
		t.Errorf("metrics from env: %+v %+v", m, m.OTLP)
	}
	if lg := tel.Logs; lg.OTLP == nil || lg.OTLP.URLPath != "/base/v1/logs" {
		t.Errorf("logs from env: %+v", lg.OTLP)
	}

	// HCL wins, setting by setting; what it leaves unset still comes from
	// the environment.
	tel, diags = loadTelemetry(t, dir, `telemetry {
  service_name = "from-hcl"
  traces {
    exporter = "stdout"
    sampling_ratio = 0.1
  }
  metrics { prometheus_listen = "127.0.0.1:9999" }
  logs {
    otlp { protocol = "grpc" }
  }
}`, env)
	if diags != nil {
		t.Fatal(diags)
	}
	if tel.ServiceName != "from-hcl" || tel.Traces.Exporter != ExporterStdout || tel.Traces.SamplingRatio != 0.1 {
		t.Errorf("HCL over env: %+v", tel)
	}
	// metrics named its exporters itself: OTEL_METRICS_EXPORTER's otlp is not added.
	if tel.Metrics.PrometheusListen != "127.0.0.1:9999" || tel.Metrics.OTLP != nil {
		t.Errorf("metrics HCL over env: %+v", tel.Metrics)
	}
	if o := tel.Logs.OTLP; o == nil || o.Protocol != ProtocolGRPC || o.Endpoint != "collector:4318" || o.Headers["x"] != "y" {
		t.Errorf("logs otlp HCL+env: %+v", o)
	}

	// OTEL_SDK_DISABLED turns the environment's exporters off.
	env["OTEL_SDK_DISABLED"] = "true"
	tel, _ = loadTelemetry(t, dir, "", env)
	if tel.Traces.Exporter != ExporterNone || tel.Metrics.OTLP != nil || tel.Metrics.PrometheusListen != "" || tel.Logs.OTLP != nil {
		t.Errorf("OTEL_SDK_DISABLED: %+v", tel)
	}

	// A bad variable is an error that names it.
	for name, val := range map[string]string{
		"OTEL_TRACES_EXPORTER":        "zipkin",
		"OTEL_TRACES_SAMPLER":         "sometimes",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
		"OTEL_METRIC_EXPORT_INTERVAL": "soon",
	} {
		_, diags := loadTelemetry(t, dir, "", map[string]string{name: val, "OTEL_TRACES_EXPORTER": "otlp"})
		if !diags.HasErrors() || !strings.Contains(diags.Error(), name) {
			t.Errorf("%s=%s: %v", name, val, diags)
		}
	}
}

// TestTelemetryProcessEnvironment: Load itself reads the process's
// environment.
func TestTelemetryProcessEnvironment(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	cfg, err := LoadBytes("t.hcl", []byte(telemetryBase), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Telemetry.Traces.Exporter != ExporterStdout {
		t.Errorf("exporter %q, want stdout from OTEL_TRACES_EXPORTER=console", cfg.Telemetry.Traces.Exporter)
	}
}
