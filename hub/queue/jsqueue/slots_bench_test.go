package jsqueue

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// BenchmarkSlotsAcquireRelease: one Acquire and its release of one hop,
// no contention, on one node (R1, every write fsynced, as startServer
// runs it). The two halves are reported apart.
func BenchmarkSlotsAcquireRelease(b *testing.B) {
	ns := startServer(b, b.TempDir())
	s := openSlots(b, ns, "a", 30*time.Second)
	benchSlots(b, s)
}

func benchSlots(b *testing.B, s *Slots) {
	ctx := context.Background()
	var acq, rel time.Duration
	for b.Loop() {
		t0 := time.Now()
		release, err := s.Acquire(ctx, "smtp:out[mx:example.net]", 10)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		release()
		rel += time.Since(t1)
		acq += t1.Sub(t0)
	}
	b.ReportMetric(float64(acq.Microseconds())/float64(b.N), "acquire-µs/op")
	b.ReportMetric(float64(rel.Microseconds())/float64(b.N), "release-µs/op")
}

// BenchmarkSlotsAcquireReleaseR3: as BenchmarkSlotsAcquireRelease on a
// three-node cluster in this process (routes on the loopback), the bucket
// with three replicas: every write waits for a quorum of two.
func BenchmarkSlotsAcquireReleaseR3(b *testing.B) {
	nodes := startCluster(b, 3)
	js := connect(b, nodes[0])
	var s *Slots
	var err error
	// The meta leader may not know every peer yet: not enough of them
	// for three replicas.
	waitFor(b, func() bool {
		s, err = OpenSlots(context.Background(), PlainSetup(js), "a", 3, 30*time.Second)
		return err == nil
	})
	b.Cleanup(s.Close)
	benchSlots(b, s)
}

// startCluster runs n JetStream nodes routed to each other on the
// loopback, every write fsynced, and waits for their meta leader.
func startCluster(b *testing.B, n int) []*server.Server {
	b.Helper()
	ports := make([]int, n)
	var routes []string
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	var nodes []*server.Server
	for i := range n {
		ns, err := server.NewServer(&server.Options{ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: b.TempDir(), SyncAlways: true, NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "hubs", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ","))})
		if err != nil {
			b.Fatal(err)
		}
		ns.Start()
		b.Cleanup(ns.Shutdown)
		nodes = append(nodes, ns)
	}
	waitFor(b, func() bool {
		current := 0
		for _, ns := range nodes {
			if ns.ReadyForConnections(time.Second) && ns.JetStreamIsCurrent() {
				current++
			}
		}
		return current == n && slices.ContainsFunc(nodes, (*server.Server).JetStreamIsLeader)
	})
	return nodes
}
