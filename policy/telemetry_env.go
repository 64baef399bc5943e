package policy

// The standard OpenTelemetry environment variables, read where the
// telemetry block is silent (the OpenTelemetry specification's "SDK
// environment variables" and "OTLP exporter configuration"):
//
//	OTEL_SDK_DISABLED=true                  the *_EXPORTER variables below are ignored
//	OTEL_SERVICE_NAME                       service_name
//	OTEL_RESOURCE_ATTRIBUTES                service.instance.id → service_instance (other keys: internal/telemetry)
//	OTEL_TRACES_EXPORTER                    otlp | console (= stdout) | none; unset: none (not the spec's otlp)
//	OTEL_TRACES_SAMPLER, _ARG               always_on, always_off, traceidratio, parentbased_* → sampling_ratio
//	OTEL_METRICS_EXPORTER                   otlp, prometheus (comma-separated) | none; unset: none
//	OTEL_EXPORTER_PROMETHEUS_HOST, _PORT    prometheus_listen (default localhost:9464)
//	OTEL_METRIC_EXPORT_INTERVAL             metrics otlp interval, in milliseconds
//	OTEL_LOGS_EXPORTER                      otlp | none; unset: none
//	OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL  grpc | http/protobuf (default)
//	OTEL_EXPORTER_OTLP[_<SIGNAL>]_ENDPOINT  a URL; the generic one is a base to which /v1/<signal> is added
//	OTEL_EXPORTER_OTLP[_<SIGNAL>]_HEADERS   k=v,k2=v2 (values URL-encoded)
//	OTEL_EXPORTER_OTLP[_<SIGNAL>]_INSECURE  true: plaintext to a host:port endpoint
//	OTEL_EXPORTER_OTLP[_<SIGNAL>]_CERTIFICATE  PEM roots for the collector
//
// SIGNAL is TRACES, METRICS or LOGS; the signal's variable wins over the
// generic one. Unlike the specification, an unset *_EXPORTER means none:
// hubd dials out only when told to. A bad value is an error diagnostic
// without a source position (it names the variable).

import (
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// telemetryEnv reads OTEL_* variables and collects their diagnostics.
type telemetryEnv struct {
	lookup func(string) (string, bool)
	diags  hcl.Diagnostics
}

func newTelemetryEnv(lookup func(string) (string, bool)) *telemetryEnv {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &telemetryEnv{lookup: lookup}
}

// silent is an environment with nothing set: checking a block that is
// not used must not report the environment's problems twice.
func (e *telemetryEnv) silent() *telemetryEnv {
	return &telemetryEnv{lookup: func(string) (string, bool) { return "", false }}
}

// get returns a variable's trimmed value; empty counts as unset.
func (e *telemetryEnv) get(name string) (string, bool) {
	v, ok := e.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (e *telemetryEnv) errorf(name, value, want string) {
	e.diags = append(e.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Invalid " + name,
		Detail:   "The environment variable " + name + "=" + strconv.Quote(value) + " must be " + want + ".",
	})
}

// signalOrGeneric reads OTEL_EXPORTER_OTLP_<SIGNAL>_<key>, then
// OTEL_EXPORTER_OTLP_<key>; specific says which one answered.
func (e *telemetryEnv) signalOrGeneric(signal, key string) (name, value string, specific, ok bool) {
	name = "OTEL_EXPORTER_OTLP_" + signal + "_" + key
	if v, ok := e.get(name); ok {
		return name, v, true, true
	}
	name = "OTEL_EXPORTER_OTLP_" + key
	v, ok := e.get(name)
	return name, v, false, ok
}

func (e *telemetryEnv) disabled() bool {
	v, _ := e.get("OTEL_SDK_DISABLED")
	return strings.EqualFold(v, "true")
}

func (e *telemetryEnv) tracesExporter() string {
	v, ok := e.get("OTEL_TRACES_EXPORTER")
	if !ok || e.disabled() {
		return ExporterNone
	}
	switch v {
	case "none", "otlp":
		return v
	case "console":
		return ExporterStdout
	}
	e.errorf("OTEL_TRACES_EXPORTER", v, "otlp, console or none")
	return ExporterNone
}

// samplingRatio maps OTEL_TRACES_SAMPLER onto hubd's one sampler,
// ParentBased(TraceIDRatio(ratio)): always_on is 1, always_off 0.
func (e *telemetryEnv) samplingRatio() float64 {
	v, ok := e.get("OTEL_TRACES_SAMPLER")
	if !ok {
		return 1
	}
	switch v {
	case "always_on", "parentbased_always_on":
		return 1
	case "always_off", "parentbased_always_off":
		return 0
	case "traceidratio", "parentbased_traceidratio":
		arg, ok := e.get("OTEL_TRACES_SAMPLER_ARG")
		if !ok {
			return 1
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			e.errorf("OTEL_TRACES_SAMPLER_ARG", arg, "a ratio from 0 to 1")
			return 1
		}
		return r
	}
	e.errorf("OTEL_TRACES_SAMPLER", v, "always_on, always_off, traceidratio or their parentbased_ forms")
	return 1
}

func (e *telemetryEnv) metricsExporters() (otlp, prometheus bool) {
	v, ok := e.get("OTEL_METRICS_EXPORTER")
	if !ok || e.disabled() {
		return false, false
	}
	for _, name := range strings.Split(v, ",") {
		switch strings.TrimSpace(name) {
		case "otlp":
			otlp = true
		case "prometheus":
			prometheus = true
		case "none":
		default:
			e.errorf("OTEL_METRICS_EXPORTER", v, "otlp, prometheus (or both, comma-separated) or none")
		}
	}
	return otlp, prometheus
}

func (e *telemetryEnv) prometheusListen() string {
	host, ok := e.get("OTEL_EXPORTER_PROMETHEUS_HOST")
	if !ok {
		host = "localhost"
	}
	port, ok := e.get("OTEL_EXPORTER_PROMETHEUS_PORT")
	if !ok {
		port = "9464"
	}
	addr := net.JoinHostPort(host, port)
	if err := checkListen(addr); err != nil {
		e.errorf("OTEL_EXPORTER_PROMETHEUS_PORT", port, "a port number")
	}
	return addr
}

func (e *telemetryEnv) logsExporter() bool {
	v, ok := e.get("OTEL_LOGS_EXPORTER")
	if !ok || e.disabled() {
		return false
	}
	switch v {
	case "otlp":
		return true
	case "none":
		return false
	}
	e.errorf("OTEL_LOGS_EXPORTER", v, "otlp or none")
	return false
}

func (e *telemetryEnv) protocol(signal string) string {
	name, v, _, ok := e.signalOrGeneric(signal, "PROTOCOL")
	if !ok {
		return ProtocolHTTPProtobuf
	}
	if v != ProtocolGRPC && v != ProtocolHTTPProtobuf {
		e.errorf(name, v, "grpc or http/protobuf")
		return ProtocolHTTPProtobuf
	}
	return v
}

// endpoint reads the signal's endpoint URL. The generic variable is a
// base URL: for HTTP the signal's path (/v1/traces, ...) is appended to
// its path; the signal's own variable is used as it is.
func (e *telemetryEnv) endpoint(signal string) (hostPort, path string, insecure *bool) {
	name, v, specific, ok := e.signalOrGeneric(signal, "ENDPOINT")
	if !ok {
		return "", "", nil
	}
	ep, err := parseEndpoint(v)
	if err != nil {
		e.errorf(name, v, "a URL such as http://collector:4318 ("+err.Error()+")")
		return "", "", nil
	}
	if !specific {
		ep.path = strings.TrimSuffix(ep.path, "/") + "/v1/" + strings.ToLower(signal)
	}
	return ep.hostPort, ep.path, ep.insecure
}

func (e *telemetryEnv) insecure(signal string) bool {
	name, v, _, ok := e.signalOrGeneric(signal, "INSECURE")
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.errorf(name, v, "true or false")
	}
	return b
}

func (e *telemetryEnv) certificate(signal string) string {
	_, v, _, _ := e.signalOrGeneric(signal, "CERTIFICATE")
	return v
}

// headers parses "k1=v1,k2=v2" with URL-encoded values (the W3C
// Baggage-like format of OTEL_EXPORTER_OTLP_HEADERS).
func (e *telemetryEnv) headers(signal string) map[string]string {
	name, v, _, ok := e.signalOrGeneric(signal, "HEADERS")
	if !ok {
		return nil
	}
	out := map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		k, val, found := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		unescaped, err := url.QueryUnescape(strings.TrimSpace(val))
		if !found || k == "" || err != nil {
			e.errorf(name, v, "a list of key=value pairs separated by commas")
			return nil
		}
		out[k] = unescaped
	}
	return out
}

// resourceAttribute returns one key of OTEL_RESOURCE_ATTRIBUTES.
func (e *telemetryEnv) resourceAttribute(key string) string {
	v, ok := e.get("OTEL_RESOURCE_ATTRIBUTES")
	if !ok {
		return ""
	}
	for _, pair := range strings.Split(v, ",") {
		k, val, found := strings.Cut(pair, "=")
		if found && strings.TrimSpace(k) == key {
			if s, err := url.QueryUnescape(strings.TrimSpace(val)); err == nil {
				return s
			}
		}
	}
	return ""
}

// systemHostname is the default service.instance.id: the host's name,
// else the hub's.
func systemHostname(hubHostname string) string {
	if name, err := os.Hostname(); err == nil && name != "" {
		return name
	}
	if hubHostname != "" {
		return hubHostname
	}
	return "unknown"
}
