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

// TestQueueNeedsRestart: a changed queue block is reported as needing a
// restart, not applied behind the operator's back; an equal one is not.
func TestQueueNeedsRestart(t *testing.T) {
	queue := func() policy.Queue {
		return policy.Queue{Engine: policy.QueueJetStream, Node: "hub-a", Replicas: 3,
			Cluster: &policy.QueueCluster{Name: "hubs", Listen: "10.0.0.1:6222", Routes: []string{"nats://10.0.0.2:6222", "nats://10.0.0.3:6222"}}}
	}
	old := &policy.Config{Queue: queue()}
	if got := needsRestart(old, &policy.Config{Queue: queue()}); len(got) != 0 {
		t.Errorf("equal queue blocks need restart: %v", got)
	}
	routes := &policy.Config{Queue: queue()}
	routes.Queue.Cluster.Routes = routes.Queue.Cluster.Routes[:1]
	local := &policy.Config{Queue: policy.Queue{Engine: policy.QueueLocal}}
	for name, cur := range map[string]*policy.Config{"routes": routes, "engine": local} {
		if got := needsRestart(old, cur); len(got) != 1 || !strings.HasPrefix(got[0], "queue (") {
			t.Errorf("changed %s: %v", name, got)
		}
	}
}
