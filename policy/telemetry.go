package policy

// The telemetry block: what hubd exports of its traces, metrics and logs
// (internal/telemetry builds the OpenTelemetry providers from it).
//
//	telemetry {
//	  service_name     = "hubd"            # default; OTEL_SERVICE_NAME when unset
//	  service_instance = "mx1"             # default: the host name
//	  record_addresses = false             # envelope addresses in span attributes (personal data)
//	  traces {
//	    exporter       = "otlp"            # none (default) | otlp | stdout
//	    protocol       = "grpc"            # grpc | http/protobuf (default)
//	    endpoint       = "collector:4317"  # host:port, or a URL (http:// means no TLS)
//	    headers        = { authorization = "Bearer ..." }
//	    insecure       = false             # plaintext to a host:port endpoint
//	    ca_file        = "ca.pem"          # trust this CA for the collector's certificate
//	    sampling_ratio = 1                 # parent-based TraceIDRatio, 0..1
//	  }
//	  metrics {
//	    prometheus_listen = "127.0.0.1:9464"   # serves /metrics
//	    otlp { endpoint = "collector:4317"  protocol = "grpc"  interval = "60s" }
//	  }
//	  logs {
//	    format = "text"                    # text (default) | json, on stderr
//	    otlp { endpoint = "collector:4318" }
//	  }
//	}
//
// Precedence, per setting: the HCL value; else the standard OTEL_*
// environment variable (telemetry_env.go); else the default. The default
// dials nothing: no trace exporter, no metric push, no Prometheus
// listener, logs on stderr only, so that tests and `make run` never reach
// out. An OTLP endpoint alone (OTEL_EXPORTER_OTLP_ENDPOINT) enables
// nothing; an exporter has to be chosen (`exporter = "otlp"`,
// OTEL_TRACES_EXPORTER=otlp, ...). The settings are read at start: a
// reload that changes them reports them as needing a restart.

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// Telemetry is the telemetry block, resolved against the environment.
type Telemetry struct {
	// RecordAddresses puts envelope addresses (MAIL FROM, RCPT TO) into
	// span attributes; off by default, as addresses are personal data.
	RecordAddresses bool
	// ServiceName and ServiceInstance become the resource attributes
	// service.name and service.instance.id of every span, metric and log
	// record; the default name is "hubd", the default instance the host
	// name.
	ServiceName     string
	ServiceInstance string
	Traces          TelemetryTraces
	Metrics         TelemetryMetrics
	Logs            TelemetryLogs
}

// Trace exporters.
const (
	ExporterNone   = "none"
	ExporterOTLP   = "otlp"
	ExporterStdout = "stdout" // one JSON span per line on stdout, for debugging
)

// OTLP protocols (the values of OTEL_EXPORTER_OTLP_PROTOCOL).
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// TelemetryTraces says where spans go and how many are kept.
type TelemetryTraces struct {
	Exporter string     // ExporterNone, ExporterOTLP or ExporterStdout
	OTLP     OTLPTarget // when Exporter is ExporterOTLP
	// SamplingRatio is the share of new traces recorded (TraceIDRatio),
	// 0..1; a span with a parent follows its parent's decision.
	SamplingRatio float64
}

// TelemetryMetrics says where metrics go: a Prometheus endpoint to be
// scraped, an OTLP push, both or neither.
type TelemetryMetrics struct {
	PrometheusListen string      // "host:port" serving /metrics; "" none
	OTLP             *OTLPTarget // nil: no push
	Interval         time.Duration
}

// TelemetryLogs says how log lines are written: on stderr as text or
// JSON, and optionally exported over OTLP as well.
type TelemetryLogs struct {
	Format string      // "text" or "json"
	OTLP   *OTLPTarget // nil: stderr only
}

// OTLPTarget is one OTLP exporter's destination.
type OTLPTarget struct {
	Protocol string // ProtocolGRPC or ProtocolHTTPProtobuf
	Endpoint string // "host:port"
	// URLPath is the HTTP path to POST to; "" is the signal's default
	// (/v1/traces, /v1/metrics, /v1/logs). Unused by gRPC.
	URLPath  string
	Headers  map[string]string // sent with every export (e.g. authorization)
	Insecure bool              // plaintext (no TLS)
	CAFile   string            // PEM roots for the collector's certificate; "" the system's
}

// Defaults of the block (OpenTelemetry's own, where it has one).
const (
	defaultServiceName     = "hubd"
	defaultMetricsInterval = 60 * time.Second // OTEL_METRIC_EXPORT_INTERVAL's default
	defaultGRPCEndpoint    = "localhost:4317"
	defaultHTTPEndpoint    = "localhost:4318"
)

type telemetrySchema struct {
	ServiceName          *string        `hcl:"service_name,optional"`
	ServiceNameRange     hcl.Range      `hcl:"service_name,attr_value_range"`
	ServiceInstance      *string        `hcl:"service_instance,optional"`
	ServiceInstanceRange hcl.Range      `hcl:"service_instance,attr_value_range"`
	RecordAddresses      *bool          `hcl:"record_addresses,optional"`
	Traces               *tracesSchema  `hcl:"traces,block"`
	Metrics              *metricsSchema `hcl:"metrics,block"`
	Logs                 *logsSchema    `hcl:"logs,block"`
	DefRange             hcl.Range      `hcl:",def_range"`
}

type tracesSchema struct {
	Exporter           *string        `hcl:"exporter,optional"`
	ExporterRange      hcl.Range      `hcl:"exporter,attr_value_range"`
	Protocol           *string        `hcl:"protocol,optional"`
	ProtocolRange      hcl.Range      `hcl:"protocol,attr_value_range"`
	Endpoint           *string        `hcl:"endpoint,optional"`
	EndpointRange      hcl.Range      `hcl:"endpoint,attr_value_range"`
	Headers            hcl.Expression `hcl:"headers,optional"`
	Insecure           *bool          `hcl:"insecure,optional"`
	InsecureRange      hcl.Range      `hcl:"insecure,attr_range"`
	CAFile             *string        `hcl:"ca_file,optional"`
	CAFileRange        hcl.Range      `hcl:"ca_file,attr_value_range"`
	SamplingRatio      *float64       `hcl:"sampling_ratio,optional"`
	SamplingRatioRange hcl.Range      `hcl:"sampling_ratio,attr_value_range"`
	DefRange           hcl.Range      `hcl:",def_range"`
}

type metricsSchema struct {
	PrometheusListen      *string     `hcl:"prometheus_listen,optional"`
	PrometheusListenRange hcl.Range   `hcl:"prometheus_listen,attr_value_range"`
	OTLP                  *otlpSchema `hcl:"otlp,block"`
	DefRange              hcl.Range   `hcl:",def_range"`
}

type logsSchema struct {
	Format      *string     `hcl:"format,optional"`
	FormatRange hcl.Range   `hcl:"format,attr_value_range"`
	OTLP        *otlpSchema `hcl:"otlp,block"`
	DefRange    hcl.Range   `hcl:",def_range"`
}

// otlpSchema is the otlp block of metrics and logs (interval: metrics only).
type otlpSchema struct {
	Protocol      *string        `hcl:"protocol,optional"`
	ProtocolRange hcl.Range      `hcl:"protocol,attr_value_range"`
	Endpoint      *string        `hcl:"endpoint,optional"`
	EndpointRange hcl.Range      `hcl:"endpoint,attr_value_range"`
	Headers       hcl.Expression `hcl:"headers,optional"`
	Insecure      *bool          `hcl:"insecure,optional"`
	InsecureRange hcl.Range      `hcl:"insecure,attr_range"`
	CAFile        *string        `hcl:"ca_file,optional"`
	CAFileRange   hcl.Range      `hcl:"ca_file,attr_value_range"`
	Interval      *string        `hcl:"interval,optional"`
	IntervalRange hcl.Range      `hcl:"interval,attr_value_range"`
	DefRange      hcl.Range      `hcl:",def_range"`
}

// otlpInput is what one OTLP destination's HCL said, whichever block it
// came from; nil pointers are "unset", to be filled from the environment.
type otlpInput struct {
	protocol      *string
	protocolRange hcl.Range
	endpoint      *string
	endpointRange hcl.Range
	headers       hcl.Expression
	insecure      *bool
	insecureRange hcl.Range
	caFile        *string
	caFileRange   hcl.Range
}

func (s *otlpSchema) input() otlpInput {
	if s == nil {
		return otlpInput{}
	}
	return otlpInput{s.Protocol, s.ProtocolRange, s.Endpoint, s.EndpointRange, s.Headers,
		s.Insecure, s.InsecureRange, s.CAFile, s.CAFileRange}
}

func (l *loader) buildTelemetry() {
	t := &l.cfg.Telemetry
	env := newTelemetryEnv(l.lookupEnv)
	blocks := l.schema.Telemetries
	var s telemetrySchema
	if len(blocks) > 0 {
		s = blocks[0]
		for _, extra := range blocks[1:] {
			l.errorf(extra.DefRange, "Duplicate telemetry block",
				"Only one telemetry block is allowed; the first is defined at %s.", rangeLine(blocks[0].DefRange))
		}
	}
	if s.RecordAddresses != nil {
		t.RecordAddresses = *s.RecordAddresses
	}
	t.ServiceName = defaultServiceName
	if v, ok := env.get("OTEL_SERVICE_NAME"); ok {
		t.ServiceName = v
	}
	if s.ServiceName != nil {
		if strings.TrimSpace(*s.ServiceName) == "" {
			l.errorf(s.ServiceNameRange, "Invalid service_name", "service_name must not be empty.")
		}
		t.ServiceName = *s.ServiceName
	}
	t.ServiceInstance = env.resourceAttribute("service.instance.id")
	if t.ServiceInstance == "" {
		t.ServiceInstance = systemHostname(l.cfg.Hub.Hostname)
	}
	if s.ServiceInstance != nil {
		if strings.TrimSpace(*s.ServiceInstance) == "" {
			l.errorf(s.ServiceInstanceRange, "Invalid service_instance", "service_instance must not be empty.")
		}
		t.ServiceInstance = *s.ServiceInstance
	}
	l.buildTraces(s.Traces, env)
	l.buildMetrics(s.Metrics, env)
	l.buildLogs(s.Logs, env)
	l.diags = append(l.diags, env.diags...)
}

func (l *loader) buildTraces(s *tracesSchema, env *telemetryEnv) {
	tr := &l.cfg.Telemetry.Traces
	tr.Exporter, tr.SamplingRatio = ExporterNone, 1
	if s == nil {
		s = &tracesSchema{}
	}
	if s.Exporter != nil {
		switch *s.Exporter {
		case ExporterNone, ExporterOTLP, ExporterStdout:
			tr.Exporter = *s.Exporter
		default:
			l.errorf(s.ExporterRange, "Invalid exporter", "exporter must be \"none\", \"otlp\" or \"stdout\", not %q.", *s.Exporter)
		}
	} else {
		tr.Exporter = env.tracesExporter()
	}
	tr.SamplingRatio = env.samplingRatio()
	if s.SamplingRatio != nil {
		if r := *s.SamplingRatio; r < 0 || r > 1 {
			l.errorf(s.SamplingRatioRange, "Invalid sampling_ratio",
				"sampling_ratio is the share of traces kept, from 0 to 1 (e.g. 0.01 for 1%%), not %v.", r)
		} else {
			tr.SamplingRatio = r
		}
	}
	in := otlpInput{s.Protocol, s.ProtocolRange, s.Endpoint, s.EndpointRange, s.Headers,
		s.Insecure, s.InsecureRange, s.CAFile, s.CAFileRange}
	if tr.Exporter == ExporterOTLP {
		tr.OTLP = l.otlpTarget(in, env, "TRACES")
	} else {
		l.otlpTarget(in, env.silent(), "TRACES") // still check what the block says
	}
}

func (l *loader) buildMetrics(s *metricsSchema, env *telemetryEnv) {
	m := &l.cfg.Telemetry.Metrics
	m.Interval = defaultMetricsInterval
	if s == nil {
		s = &metricsSchema{}
	}
	wantOTLP, wantProm := false, false
	if s.PrometheusListen == nil && s.OTLP == nil {
		wantOTLP, wantProm = env.metricsExporters()
	}
	if s.PrometheusListen != nil {
		if err := checkListen(*s.PrometheusListen); err != nil {
			l.errorf(s.PrometheusListenRange, "Invalid prometheus_listen",
				"prometheus_listen must be \"host:port\", e.g. \"127.0.0.1:9464\": %v.", err)
		}
		m.PrometheusListen = *s.PrometheusListen
	} else if wantProm {
		m.PrometheusListen = env.prometheusListen()
	}
	if v, ok := env.get("OTEL_METRIC_EXPORT_INTERVAL"); ok {
		if ms, err := strconv.Atoi(v); err != nil || ms <= 0 {
			env.errorf("OTEL_METRIC_EXPORT_INTERVAL", v, "a positive number of milliseconds")
		} else {
			m.Interval = time.Duration(ms) * time.Millisecond
		}
	}
	if s.OTLP != nil && s.OTLP.Interval != nil {
		m.Interval = l.duration(s.OTLP.Interval, s.OTLP.IntervalRange, m.Interval)
		if m.Interval < time.Second {
			l.errorf(s.OTLP.IntervalRange, "Invalid interval", "interval must be at least 1s, not %s.", m.Interval)
		}
	}
	if s.OTLP != nil || wantOTLP {
		target := l.otlpTarget(s.OTLP.input(), env, "METRICS")
		m.OTLP = &target
	}
}

func (l *loader) buildLogs(s *logsSchema, env *telemetryEnv) {
	lg := &l.cfg.Telemetry.Logs
	lg.Format = "text"
	if s == nil {
		s = &logsSchema{}
	}
	if s.Format != nil {
		switch *s.Format {
		case "text", "json":
			lg.Format = *s.Format
		default:
			l.errorf(s.FormatRange, "Invalid format", "format must be \"text\" or \"json\", not %q.", *s.Format)
		}
	}
	if s.OTLP != nil && s.OTLP.Interval != nil {
		l.errorf(s.OTLP.IntervalRange, "Unsupported argument",
			"interval belongs to metrics { otlp { ... } }; log records are exported in batches as they come.")
	}
	if s.OTLP != nil || env.logsExporter() {
		target := l.otlpTarget(s.OTLP.input(), env, "LOGS")
		lg.OTLP = &target
	}
}

// otlpTarget resolves one OTLP destination: HCL first, then
// OTEL_EXPORTER_OTLP_<SIGNAL>_*, then OTEL_EXPORTER_OTLP_*, then the
// OpenTelemetry defaults (http/protobuf to localhost:4318, plaintext).
func (l *loader) otlpTarget(in otlpInput, env *telemetryEnv, signal string) OTLPTarget {
	var t OTLPTarget
	t.Protocol = env.protocol(signal)
	if in.protocol != nil {
		switch *in.protocol {
		case ProtocolGRPC, ProtocolHTTPProtobuf:
			t.Protocol = *in.protocol
		default:
			l.errorf(in.protocolRange, "Invalid protocol",
				"protocol must be \"grpc\" or \"http/protobuf\", not %q.", *in.protocol)
		}
	}
	var schemeInsecure *bool
	if in.endpoint != nil {
		ep, err := parseEndpoint(*in.endpoint)
		if err != nil {
			l.errorf(in.endpointRange, "Invalid endpoint",
				"endpoint must be \"host:port\" or a URL such as \"http://collector:4318\": %v.", err)
		}
		t.Endpoint, t.URLPath, schemeInsecure = ep.hostPort, ep.path, ep.insecure
	} else {
		t.Endpoint, t.URLPath, schemeInsecure = env.endpoint(signal)
	}
	if t.Endpoint == "" {
		t.Endpoint = defaultHTTPEndpoint
		if t.Protocol == ProtocolGRPC {
			t.Endpoint = defaultGRPCEndpoint
		}
		yes := true // the OpenTelemetry default endpoint is http://localhost:...
		schemeInsecure = &yes
	}
	if t.Protocol == ProtocolGRPC {
		t.URLPath = ""
	}
	switch {
	case in.insecure != nil && schemeInsecure != nil && *in.insecure != *schemeInsecure:
		l.errorf(in.insecureRange, "Conflicting insecure",
			"insecure = %t contradicts the endpoint's URL scheme (http:// is plaintext, https:// is TLS).", *in.insecure)
	case in.insecure != nil:
		t.Insecure = *in.insecure
	case schemeInsecure != nil:
		t.Insecure = *schemeInsecure
	default:
		t.Insecure = env.insecure(signal)
	}
	t.Headers = env.headers(signal)
	if h, set := l.stringMap(in.headers); set {
		t.Headers = h
	}
	if in.caFile != nil {
		t.CAFile = l.existingFile(*in.caFile, in.caFileRange, "ca_file")
	} else {
		t.CAFile = env.certificate(signal)
	}
	if t.Insecure && t.CAFile != "" {
		rng := in.insecureRange
		if in.caFile != nil {
			rng = in.caFileRange
		}
		l.errorf(rng, "Conflicting ca_file", "ca_file is for TLS; with insecure = true nothing would check it.")
	}
	return t
}

// stringMap decodes an optional map-of-strings attribute (headers).
func (l *loader) stringMap(expr hcl.Expression) (map[string]string, bool) {
	if expr == nil {
		return nil, false
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		l.diags = append(l.diags, diags...)
		return nil, false
	}
	if v.IsNull() {
		return nil, false
	}
	if !v.Type().IsObjectType() && !v.Type().IsMapType() {
		l.errorf(expr.Range(), "Expected a map of strings", "Write headers as a map, e.g. { authorization = \"Bearer ...\" }.")
		return nil, false
	}
	var m map[string]string
	if d := gohcl.DecodeExpression(expr, nil, &m); d.HasErrors() {
		l.diags = append(l.diags, d...)
		return nil, false
	}
	for k := range m {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			l.errorf(expr.Range(), "Invalid header name", "%q is not an HTTP header name.", k)
		}
	}
	return m, true
}

// endpoint is a parsed endpoint setting.
type endpoint struct {
	hostPort string
	path     string // the URL's path; "" when none or "/"
	insecure *bool  // from the URL scheme; nil for a bare host:port
}

// parseEndpoint accepts "host:port" or "http(s)://host:port[/path]".
func parseEndpoint(s string) (endpoint, error) {
	if !strings.Contains(s, "://") {
		if err := checkListen(s); err != nil {
			return endpoint{}, err
		}
		return endpoint{hostPort: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return endpoint{}, err
	}
	insecure := false
	port := "443"
	switch u.Scheme {
	case "http":
		insecure, port = true, "80"
	case "https":
	default:
		return endpoint{}, fmt.Errorf("scheme %q is neither http nor https", u.Scheme)
	}
	if u.Hostname() == "" {
		return endpoint{}, fmt.Errorf("%q names no host", s)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	e := endpoint{hostPort: net.JoinHostPort(u.Hostname(), port), insecure: &insecure}
	if u.Path != "/" {
		e.path = u.Path
	}
	return e, nil
}

// checkListen checks a "host:port" with a numeric port.
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q is not a host name or address", host)
	}
	return nil
}
