package daemon

import (
	"strings"
	"testing"

	"hubd/policy"
)

// TestTelemetryNeedsRestart: a changed telemetry block is reported as
// needing a restart; record_addresses alone is not (sessions read it).
func TestTelemetryNeedsRestart(t *testing.T) {
	old := &policy.Config{Telemetry: policy.Telemetry{ServiceName: "hubd",
		Metrics: policy.TelemetryMetrics{OTLP: &policy.OTLPTarget{Endpoint: "a:4318", Headers: map[string]string{"k": "v"}}}}}
	same := &policy.Config{Telemetry: old.Telemetry}
	same.Telemetry.RecordAddresses = true
	same.Telemetry.Metrics.OTLP = &policy.OTLPTarget{Endpoint: "a:4318", Headers: map[string]string{"k": "v"}}
	if got := needsRestart(old, same); len(got) != 0 {
		t.Errorf("equal telemetry (record_addresses aside) needs restart: %v", got)
	}
	changed := &policy.Config{Telemetry: old.Telemetry}
	changed.Telemetry.Traces.SamplingRatio = 0.5
	if got := needsRestart(old, changed); len(got) != 1 || !strings.HasPrefix(got[0], "telemetry") {
		t.Errorf("changed sampling: %v", got)
	}
}
