package connectors

// BenchmarkDataPath measures the receive side's cost per byte of DATA
// content: one loopback SMTP session sends transactions one after another,
// and a Submitter that only reads the body (the hub's queue is not
// involved), so what remains is the command filter, go-smtp and
// message.Reader. One operation is one message accepted with 250.
//
// Reported beyond ns/op and MB/s: cpu_ns/op, the process's CPU time (both
// ends of the session run in it) per message.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/hub"
	"hubd/policy"
)

// discardSubmitter reads the body to its end and queues nothing.
type discardSubmitter struct{}

func (discardSubmitter) Submit(_ context.Context, env hub.Envelope, body io.Reader) (hub.QueueID, error) {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return "", err
	}
	return env.ID, nil
}

// benchMessage is a message of about size octets: a header section and
// 76-octet body lines, some starting with a dot (so dot-stuffed on the
// wire). It returns the content as the client sends it after DATA,
// stuffed and ended by "." CRLF.
func benchMessage(size int) []byte {
	var b strings.Builder
	b.WriteString("From: bench@client.test\r\nTo: bench@example.com\r\nSubject: throughput\r\n" +
		"Message-ID: <bench@client.test>\r\n\r\n")
	line := strings.Repeat("0123456789abcdefghij", 4)[:74] + "\r\n"
	for i := 0; b.Len() < size-len(line); i++ {
		if i%50 == 49 {
			b.WriteString("." + line[1:]) // stuffed: ".." on the wire
			continue
		}
		b.WriteString(line)
	}
	return []byte(strings.ReplaceAll(b.String(), "\r\n.", "\r\n..") + ".\r\n")
}

func BenchmarkDataPath(b *testing.B) {
	for _, size := range []int{5_000, 100_000} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) { benchDataPath(b, size) })
	}
}

func benchDataPath(b *testing.B, size int) {
	dir := b.TempDir()
	src := fmt.Sprintf(`
hub {
  hostname  = "mx.test"
  spool_dir = %q
}
accepted_domain "example.com" {}
mailbox "bench@example.com" {}
receive_connector "in" {
  bind = ["127.0.0.1:0"]
  permissions { anonymous = ["submit"] }
}
`, filepath.Join(dir, "spool"))
	cfg, err := policy.LoadBytes(filepath.Join(dir, "hubd.hcl"), []byte(src), dir)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(Options{Config: cfg, Submitter: discardSubmitter{},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Shutdown(context.Background()) })

	conn, err := net.Dial("tcp", svc.Addrs()["127.0.0.1:0"].String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	w := bufio.NewWriterSize(conn, 64<<10)
	tp := textproto.NewReader(bufio.NewReader(conn))
	expect := func(code int) {
		if _, _, err := tp.ReadResponse(code); err != nil {
			b.Fatal(err)
		}
	}
	expect(220)
	fmt.Fprintf(w, "EHLO client.test\r\n")
	w.Flush()
	expect(250)

	body := benchMessage(size)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		// Pipelined as a client may (RFC 2920): MAIL, RCPT, DATA together.
		w.WriteString("MAIL FROM:<bench@client.test>\r\nRCPT TO:<bench@example.com>\r\nDATA\r\n")
		w.Flush()
		expect(250)
		expect(250)
		expect(354)
		w.Write(body)
		w.Flush()
		expect(250)
	}
	b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N), "cpu_ns/op")
	fmt.Fprintf(w, "QUIT\r\n")
	w.Flush()
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
