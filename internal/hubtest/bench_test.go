package hubtest

// End-to-end throughput benchmarks: a complete in-process hub, real loopback
// SMTP sessions from net/smtp, the real durable queue on disk (with its
// fsyncs, DESIGN.md invariant 1) and the real deliverers. One benchmark
// operation is one ~4 KB message accepted with 250 after DATA.
//
// Each client goroutine of b.RunParallel keeps one SMTP session open and
// sends many transactions over it (RSET, MAIL, RCPT, DATA), which is how a
// busy upstream MTA or an application relay behaves; the connect+EHLO cost
// is therefore amortised, as it is for smtp-source in examples/bench.
//
// Reported metrics:
//   - accepted_msgs/s: messages acknowledged per wall-clock second while the
//     clients were sending (deliveries run concurrently and compete for CPU
//     and disk, as they do in production);
//   - delivered_msgs/s: b.N divided by the time until the queue was empty
//     again, i.e. acceptance plus draining the backlog;
//   - cpu_µs/msg: the process's CPU time (user + system, clients included)
//     per message, from the first send until the queue drained.
//
// The queue must drain within drainTimeout and every message must arrive,
// otherwise the benchmark fails: a figure for mail that was acked but lost
// would be meaningless.

import (
	"bytes"
	"context"
	"fmt"
	"net/smtp"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"hubd/internal/smtpsink"
)

const (
	// benchClientsPerProc × GOMAXPROCS is the number of parallel SMTP
	// sessions; with 2 CPUs that is 16, between smtp-source's -s 10 and -s 50.
	benchClientsPerProc = 8
	drainTimeout        = 2 * time.Minute
)

// benchBody is a ~4 KB RFC 5322 message: headers and 64-octet lines, the
// size smtp-source -l 4096 sends.
var benchBody = func() []byte {
	var b bytes.Buffer
	b.WriteString("From: bench@client.test\r\nTo: bench\r\nSubject: throughput\r\n" +
		"Message-ID: <bench@client.test>\r\n\r\n")
	line := strings.Repeat("x", 62) + "\r\n"
	for b.Len() < 4096-len(line) {
		b.WriteString(line)
	}
	return b.Bytes()
}()

// BenchmarkSubmitEndToEnd measures acceptance into the queue with local
// delivery to a Maildir running at the same time.
func BenchmarkSubmitEndToEnd(b *testing.B) { benchSubmitEndToEnd(b, Options{}) }

// BenchmarkSubmitEndToEndMetered is the same with every metric on: the OTel
// SDK with the Prometheus exporter (docs/metrics.md), which nobody scrapes
// during the run.
func BenchmarkSubmitEndToEndMetered(b *testing.B) {
	benchSubmitEndToEnd(b, Options{MeterProvider: startPromEndpoint(b).Provider})
}

func benchSubmitEndToEnd(b *testing.B, opts Options) {
	h := Start(b, fmt.Sprintf(`
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {
  type = "authoritative"
}
mailbox "bench@example.test" { maildir = "{{dir}}/mail/bench" }
receive_connector "in" {
  bind = ["127.0.0.1:0"]
  max_inbound_connections_per_source = %d
  permissions { anonymous = ["submit"] }
}
`, 4*benchClientsPerProc*runtime.GOMAXPROCS(0)), opts)
	runSubmitBench(b, h.Addr(b, "in"), "bench@example.test", h, func() int {
		entries, _ := os.ReadDir(filepath.Join(h.Dir, "mail/bench/new"))
		return len(entries)
	})
}

// BenchmarkSubmitEndToEndRelay measures acceptance with every message relayed
// to a smart host (an in-test smtpsink) over plain SMTP.
func BenchmarkSubmitEndToEndRelay(b *testing.B) {
	var arrived atomic.Int64
	sink := smtpsink.Start(b, smtpsink.Options{
		Data: func(string, []string, []byte) error { arrived.Add(1); return nil },
	})
	h := Start(b, fmt.Sprintf(`
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
receive_connector "in" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.1/32"]
  max_inbound_connections_per_source = %d
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "smarthost" {
  address_spaces = ["*"]
  smart_hosts    = [%q]
  tls            = "none"
}
`, 4*benchClientsPerProc*runtime.GOMAXPROCS(0), sink.Addr()), Options{})
	runSubmitBench(b, h.Addr(b, "in"), "bench@remote.test", h, func() int { return int(arrived.Load()) })
}

// runSubmitBench sends b.N messages to rcpt through addr from parallel
// sessions, reports the metrics, then checks that all b.N were delivered
// (delivered counts them at the destination).
func runSubmitBench(b *testing.B, addr, rcpt string, h *Hub, delivered func() int) {
	b.SetBytes(int64(len(benchBody)))
	b.SetParallelism(benchClientsPerProc)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpuStart := time.Now(), processCPU()
	b.RunParallel(func(pb *testing.PB) {
		c, err := smtp.Dial(addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			b.Error(err)
			return
		}
		first := true
		for pb.Next() {
			if !first {
				// RFC 5321 §4.1.1.5: a fresh transaction on the same session.
				if err := c.Reset(); err != nil {
					b.Error(err)
					return
				}
			}
			first = false
			if err := sendOn(c, rcpt); err != nil {
				b.Error(err)
				return
			}
		}
		c.Quit()
	})
	accepted := time.Since(start)
	b.StopTimer()
	if b.Failed() {
		return
	}
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted_msgs/s")

	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := h.Transport.WaitIdle(ctx); err != nil {
		b.Fatal(err)
	}
	drained := time.Since(start)
	if n := delivered(); n != b.N {
		b.Fatalf("%d messages accepted, %d delivered after the queue drained", b.N, n)
	}
	b.ReportMetric(float64(b.N)/drained.Seconds(), "delivered_msgs/s")
	// The clients run in this process too: CPU per message covers both
	// ends, which is still what a comparison of hub settings needs.
	b.ReportMetric(float64((processCPU()-cpuStart).Microseconds())/float64(b.N), "cpu_µs/msg")
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sendOn runs one MAIL/RCPT/DATA transaction; nil means 250 after DATA.
func sendOn(c *smtp.Client, rcpt string) error {
	if err := c.Mail("bench@client.test"); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(benchBody); err != nil {
		return err
	}
	return w.Close()
}
