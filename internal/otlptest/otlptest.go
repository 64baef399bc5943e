// Package otlptest is an OTLP/HTTP receiver for tests: a real HTTP server on
// 127.0.0.1:0 that accepts what an OpenTelemetry exporter (hubd's, in
// process or in a child process) POSTs to /v1/traces, /v1/metrics and
// /v1/logs, decodes the protobuf (or JSON) payloads with the OTLP
// definitions (go.opentelemetry.io/proto/otlp), and keeps them so that a
// test can wait for a span by name, with a deadline, and look at its kind,
// ids, parent, attributes, events, links and resource.
//
// It answers every well-formed request 200 with an empty Export*Response
// (OTLP/HTTP, "Full success"), a malformed one 400; gzip request bodies are
// accepted. Attribute values become Go values: string, bool, int64, float64,
// []byte, []any (arrays) and map[string]any (key-value lists).
package otlptest

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Span is one received span.
type Span struct {
	Name         string
	Kind         trace.SpanKind // OTLP's numbering is the API's
	TraceID      string         // 32 hex digits
	SpanID       string         // 16 hex digits
	ParentSpanID string         // "" for a root span
	Attributes   map[string]any
	Events       []Event
	Links        []Link
	StatusCode   int // 0 unset, 1 ok, 2 error
	StatusText   string
	Resource     map[string]any // resource attributes: service.name, ...
	Scope        string         // instrumentation scope name
	Start, End   time.Time
}

// Event is a span event.
type Event struct {
	Name       string
	Attributes map[string]any
}

// Link is a span link.
type Link struct {
	TraceID, SpanID string
	Attributes      map[string]any
}

// Metric is one metric of one export, with its data points.
type Metric struct {
	Name, Unit string
	Points     []Point
	Resource   map[string]any
}

// Point is one data point: Value for sums and gauges; Count and Sum for
// histograms.
type Point struct {
	Attributes map[string]any
	Value      float64
	Count      uint64
	Sum        float64
}

// LogRecord is one received log record.
type LogRecord struct {
	Body            any
	Severity        string
	TraceID, SpanID string
	Attributes      map[string]any
	Resource        map[string]any
}

// Receiver is a running OTLP/HTTP receiver.
type Receiver struct {
	// Endpoint is "127.0.0.1:port" (an exporter's endpoint with insecure);
	// URL is "http://127.0.0.1:port" (OTEL_EXPORTER_OTLP_ENDPOINT).
	Endpoint, URL string

	srv     *httptest.Server
	mu      sync.Mutex
	spans   []Span
	metrics []Metric
	logs    []LogRecord
	errs    []string
}

// New starts a receiver, closed when the test ends.
func New(t testing.TB) *Receiver {
	r := Start()
	t.Cleanup(r.Close)
	return r
}

// Start starts a receiver; Close stops it.
func Start() *Receiver {
	r := &Receiver{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.traces)
	mux.HandleFunc("POST /v1/metrics", r.metricsHandler)
	mux.HandleFunc("POST /v1/logs", r.logsHandler)
	r.srv = httptest.NewServer(mux)
	r.URL = r.srv.URL
	r.Endpoint = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// Close stops the receiver.
func (r *Receiver) Close() { r.srv.Close() }

// decode reads a request body into msg and answers with resp.
func (r *Receiver) decode(w http.ResponseWriter, req *http.Request, msg, resp proto.Message) bool {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			r.fail(w, err)
			return false
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		r.fail(w, err)
		return false
	}
	json := strings.HasPrefix(req.Header.Get("Content-Type"), "application/json")
	if json {
		err = protojson.Unmarshal(b, msg)
	} else {
		err = proto.Unmarshal(b, msg)
	}
	if err != nil {
		r.fail(w, err)
		return false
	}
	var out []byte
	if json {
		out, _ = protojson.Marshal(resp)
		w.Header().Set("Content-Type", "application/json")
	} else {
		out, _ = proto.Marshal(resp)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}
	w.Write(out)
	return true
}

func (r *Receiver) fail(w http.ResponseWriter, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err.Error())
	r.mu.Unlock()
	http.Error(w, err.Error(), http.StatusBadRequest)
}

func (r *Receiver) traces(w http.ResponseWriter, req *http.Request) {
	var msg coltrace.ExportTraceServiceRequest
	if !r.decode(w, req, &msg, &coltrace.ExportTraceServiceResponse{}) {
		return
	}
	var got []Span
	for _, rs := range msg.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{Name: s.GetName(), Kind: trace.SpanKind(s.GetKind()),
					TraceID: hexID(s.GetTraceId()), SpanID: hexID(s.GetSpanId()), ParentSpanID: hexID(s.GetParentSpanId()),
					Attributes: attrs(s.GetAttributes()), StatusCode: int(s.GetStatus().GetCode()),
					StatusText: s.GetStatus().GetMessage(), Resource: res, Scope: ss.GetScope().GetName(),
					Start: time.Unix(0, int64(s.GetStartTimeUnixNano())), End: time.Unix(0, int64(s.GetEndTimeUnixNano()))}
				for _, e := range s.GetEvents() {
					sp.Events = append(sp.Events, Event{Name: e.GetName(), Attributes: attrs(e.GetAttributes())})
				}
				for _, l := range s.GetLinks() {
					sp.Links = append(sp.Links, Link{TraceID: hexID(l.GetTraceId()), SpanID: hexID(l.GetSpanId()),
						Attributes: attrs(l.GetAttributes())})
				}
				got = append(got, sp)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
}

func (r *Receiver) metricsHandler(w http.ResponseWriter, req *http.Request) {
	var msg colmetrics.ExportMetricsServiceRequest
	if !r.decode(w, req, &msg, &colmetrics.ExportMetricsServiceResponse{}) {
		return
	}
	var got []Metric
	for _, rm := range msg.GetResourceMetrics() {
		res := attrs(rm.GetResource().GetAttributes())
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				got = append(got, Metric{Name: m.GetName(), Unit: m.GetUnit(), Resource: res, Points: points(m)})
			}
		}
	}
	r.mu.Lock()
	r.metrics = append(r.metrics, got...)
	r.mu.Unlock()
}

func (r *Receiver) logsHandler(w http.ResponseWriter, req *http.Request) {
	var msg collogs.ExportLogsServiceRequest
	if !r.decode(w, req, &msg, &collogs.ExportLogsServiceResponse{}) {
		return
	}
	var got []LogRecord
	for _, rl := range msg.GetResourceLogs() {
		res := attrs(rl.GetResource().GetAttributes())
		for _, sl := range rl.GetScopeLogs() {
			for _, l := range sl.GetLogRecords() {
				got = append(got, LogRecord{Body: value(l.GetBody()), Severity: l.GetSeverityText(),
					TraceID: hexID(l.GetTraceId()), SpanID: hexID(l.GetSpanId()),
					Attributes: attrs(l.GetAttributes()), Resource: res})
			}
		}
	}
	r.mu.Lock()
	r.logs = append(r.logs, got...)
	r.mu.Unlock()
}

// Spans returns every span received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Metrics returns every metric received so far (one entry per export).
func (r *Receiver) Metrics() []Metric {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Metric(nil), r.metrics...)
}

// Logs returns every log record received so far.
func (r *Receiver) Logs() []LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]LogRecord(nil), r.logs...)
}

// Errors returns the requests the receiver could not decode.
func (r *Receiver) Errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// SpansNamed returns the spans received so far with that name.
func (r *Receiver) SpansNamed(name string) []Span {
	var out []Span
	for _, s := range r.Spans() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// WaitSpan polls until a span with that name has arrived, and returns the
// first; the test fails at the deadline.
func (r *Receiver) WaitSpan(t testing.TB, name string, timeout time.Duration) Span {
	t.Helper()
	spans := r.WaitSpans(t, timeout, func(s []Span) bool {
		for _, sp := range s {
			if sp.Name == name {
				return true
			}
		}
		return false
	})
	for _, sp := range spans {
		if sp.Name == name {
			return sp
		}
	}
	panic("unreachable")
}

// WaitSpans polls until done is true of the spans received so far, and
// returns them; the test fails at the deadline, listing what came.
func (r *Receiver) WaitSpans(t testing.TB, timeout time.Duration, done func([]Span) bool) []Span {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		spans := r.Spans()
		if done(spans) {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("otlptest: spans not there after %s; received %s (decode errors: %v)", timeout, names(spans), r.Errors())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitMetric polls until a metric with that name has arrived and returns
// the latest export of it.
func (r *Receiver) WaitMetric(t testing.TB, name string, timeout time.Duration) Metric {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ms := r.Metrics()
		for i := len(ms) - 1; i >= 0; i-- {
			if ms[i].Name == name {
				return ms[i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("otlptest: metric %q not there after %s (%d metrics received)", name, timeout, len(ms))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func names(spans []Span) string {
	var b strings.Builder
	b.WriteString("[")
	for i, s := range spans {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s(%s)", s.Name, s.Kind)
	}
	b.WriteString("]")
	return b.String()
}

func hexID(b []byte) string {
	if len(b) == 0 || strings.Trim(hex.EncodeToString(b), "0") == "" {
		return ""
	}
	return hex.EncodeToString(b)
}

func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return attrs(x.KvlistValue.GetValues())
	}
	return nil
}

// points flattens a metric's data points, whatever its type.
func points(m *metricspb.Metric) []Point {
	var out []Point
	num := func(dps []*metricspb.NumberDataPoint) {
		for _, dp := range dps {
			p := Point{Attributes: attrs(dp.GetAttributes())}
			switch v := dp.GetValue().(type) {
			case *metricspb.NumberDataPoint_AsDouble:
				p.Value = v.AsDouble
			case *metricspb.NumberDataPoint_AsInt:
				p.Value = float64(v.AsInt)
			}
			out = append(out, p)
		}
	}
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Sum:
		num(d.Sum.GetDataPoints())
	case *metricspb.Metric_Gauge:
		num(d.Gauge.GetDataPoints())
	case *metricspb.Metric_Histogram:
		for _, dp := range d.Histogram.GetDataPoints() {
			out = append(out, Point{Attributes: attrs(dp.GetAttributes()), Count: dp.GetCount(), Sum: dp.GetSum()})
		}
	}
	return out
}
