package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/internal/smtpsink"
)

// BenchmarkQueueEngines measures the cost of replication (docs/cluster.md,
// "Cost of replication"): b.N messages relayed to a sink through one hubd
// on the local spool, one on JetStream R1 (one embedded node, every write
// fsynced) and three on JetStream R3 (on this one machine: the cost of
// replication, not scale). It reports messages per second accepted and
// end to end, and the hubds' CPU per message (user+system, from /proc).
//
//	go test -run '^$' -bench QueueEngines -benchtime 3000x ./cmd/hubd
func BenchmarkQueueEngines(b *testing.B) {
	b.Run("local", func(b *testing.B) {
		sink := smtpsink.Start(b, smtpsink.Options{})
		n := &clusterNode{name: "a", dir: b.TempDir(), smtp: freePort(b)}
		n.cfg = writeConfig(b, n.dir, relayHubConfig("a", n.smtp, sink.Port(), 20, ""))
		n.start(b)
		n.waitListening(b)
		runEngineLoad(b, sink, []*clusterNode{n})
	})
	b.Run("jetstream-R1", func(b *testing.B) {
		sink := smtpsink.Start(b, smtpsink.Options{})
		n := &clusterNode{name: "a", dir: b.TempDir(), smtp: freePort(b)}
		queue := `
queue {
  engine   = "jetstream"
  node     = "a"
  replicas = 1
  sync     = "always"
}`
		n.cfg = writeConfig(b, n.dir, relayHubConfig("a", n.smtp, sink.Port(), 20, queue))
		n.start(b)
		n.waitListening(b)
		runEngineLoad(b, sink, []*clusterNode{n})
	})
	b.Run("jetstream-R3x3", func(b *testing.B) {
		sink := smtpsink.Start(b, smtpsink.Options{})
		runEngineLoad(b, sink, startClusterLimit(b, sink, 20))
	})
}

// runEngineLoad sends b.N messages from 16 clients spread over nodes and
// waits until the sink has them all.
func runEngineLoad(b *testing.B, sink *smtpsink.Sink, nodes []*clusterNode) {
	const clients = 16
	// Warm up: one message through each hub (a cluster that just formed
	// may still be electing its streams' leaders: 451 until then).
	for i, n := range nodes {
		waitWithin(b, 30*time.Second, 100*time.Millisecond, func() bool {
			return sendRelay(n.smtp, fmt.Sprintf("warm%d", i)) == nil
		}, "a warm-up message through hub "+n.name)
	}
	sink.WaitFor(b, len(nodes), 30*time.Second)
	base := len(sink.Messages())
	cpu0 := cpuOf(b, nodes)
	b.ResetTimer()
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				n := nodes[int(i)%len(nodes)]
				if err := sendRelay(n.smtp, fmt.Sprintf("e%d", i)); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	accepted := time.Since(start)
	want := base + b.N - int(failed.Load())
	sink.WaitFor(b, want, 5*time.Minute)
	total := time.Since(start)
	b.StopTimer()
	cpu := cpuOf(b, nodes) - cpu0
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted_msgs/s")
	b.ReportMetric(float64(b.N)/total.Seconds(), "e2e_msgs/s")
	b.ReportMetric(cpu.Seconds()*1e3/float64(b.N), "cpu_ms/msg")
	if f := failed.Load(); f > 0 {
		b.ReportMetric(float64(f), "refused")
	}
}

// cpuOf sums the user and system CPU time of the nodes' processes.
func cpuOf(b *testing.B, nodes []*clusterNode) time.Duration {
	var sum time.Duration
	for _, n := range nodes {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.p.cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name (which is in parentheses):
		// utime and stime are the 14th and 15th fields, in clock ticks.
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		sum += time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
	}
	return sum
}
