package smtpout

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/internal/certgen"
	"hubd/internal/logbuf"
	"hubd/internal/smtpsink"
)

// shared is a Deliverer that lives for the whole test, as the transport's
// does, so that connections can be reused between Deliver calls.
func shared(t *testing.T, opts Options) *Deliverer {
	t.Helper()
	d := New(opts)
	t.Cleanup(func() { d.Close() })
	return d
}

func deliverWith(t *testing.T, d *Deliverer, hop delivery.NextHop, msg delivery.Message, rc []delivery.Recipient) []delivery.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := d.Deliver(ctx, hop, msg, rc)
	if len(res) != len(rc) {
		t.Fatalf("%d results for %d recipients", len(res), len(rc))
	}
	return res
}

func numbered(i int) delivery.Message {
	m := message(fmt.Sprintf("Subject: %d\r\n\r\nmessage %d\r\n", i, i))
	m.ID = hub.QueueID(fmt.Sprint("Q", i))
	return m
}

func wantPerConn(t *testing.T, sink *smtpsink.Sink, want ...int) {
	t.Helper()
	if got := sink.MessagesPerConnection(); !slices.Equal(got, want) {
		t.Errorf("messages per connection = %v, want %v", got, want)
	}
}

// TestReuseThreeMessagesOneConnection: with and without PIPELINING, and
// under STARTTLS, three messages to one hop share one connection.
func TestReuseThreeMessagesOneConnection(t *testing.T) {
	tlsCfg, _, err := certgen.ServerConfig("sink.test")
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]smtpsink.Options{
		"pipelining":    {},
		"no pipelining": {NoPipelining: true},
		"starttls":      {TLSConfig: tlsCfg},
	} {
		t.Run(name, func(t *testing.T) {
			sink := smtpsink.Start(t, o)
			d := shared(t, testOptions())
			for i := range 3 {
				res := deliverWith(t, d, smartHop(sink.Addr()), numbered(i), rcpts("a@remote.test", "b@remote.test"))
				for _, r := range res {
					expect(t, r, delivery.Delivered, 250, "2.0.0")
				}
			}
			msgs := sink.WaitFor(t, 3, waitLong)
			wantPerConn(t, sink, 3)
			for i, m := range msgs {
				if want := fmt.Sprintf("message %d", i); !strings.Contains(string(m.Data), want) || len(m.To) != 2 {
					t.Errorf("message %d: %v %q", i, m, m.Data)
				}
				if m.TLS != (o.TLSConfig != nil) {
					t.Errorf("message %d: TLS = %v", i, m.TLS)
				}
			}
			if n := d.pool.Len(); n != 1 {
				t.Errorf("%d idle connections, want 1", n)
			}
		})
	}
}

// TestReuseLimit: 25 messages with the default limit of 20 per connection
// take two connections, the first of them QUIT after its 20th.
func TestReuseLimit(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := shared(t, testOptions())
	for i := range 25 {
		expect(t, deliverWith(t, d, smartHop(sink.Addr()), numbered(i), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	}
	sink.WaitFor(t, 25, waitLong)
	wantPerConn(t, sink, 20, 5)
	sink.WaitOpen(t, 1, waitLong) // the first was closed, the second is idle

	// MaxMessagesPerConnection 1 turns reuse off.
	one := smtpsink.Start(t, smtpsink.Options{})
	opts := testOptions()
	opts.MaxMessagesPerConnection = 1
	d1 := shared(t, opts)
	for i := range 2 {
		deliverWith(t, d1, smartHop(one.Addr()), numbered(i), rcpts("a@remote.test"))
	}
	one.WaitFor(t, 2, waitLong)
	wantPerConn(t, one, 1, 1)
	one.WaitOpen(t, 0, waitLong)
}

// TestReuseAfterRefusals: a transaction whose recipients were all refused
// (no DATA, RSET) or whose data was refused leaves the connection usable.
func TestReuseAfterRefusals(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{
		TempFailFirst: 1,
		Rcpt: func(addr string) error {
			if addr == "nobody@remote.test" {
				return smtpErr(550, 5, 1, 1, "no such user")
			}
			return nil
		},
	})
	d := shared(t, testOptions())
	hop := smartHop(sink.Addr())
	expect(t, deliverWith(t, d, hop, numbered(0), rcpts("nobody@remote.test"))[0], delivery.Failed, 550, "5.1.1")
	r := deliverWith(t, d, hop, numbered(1), rcpts("a@remote.test"))[0]
	expect(t, r, delivery.Deferred, 451, "4.3.0") // TempFailFirst
	if r.Connection {
		t.Error("a refused message marked as a connection failure")
	}
	res := deliverWith(t, d, hop, numbered(2), rcpts("nobody@remote.test", "a@remote.test"))
	expect(t, res[0], delivery.Failed, 550, "5.1.1")
	expect(t, res[1], delivery.Delivered, 250, "2.0.0")
	if msgs := sink.WaitFor(t, 1, waitLong); len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "message 2") {
		t.Errorf("sink got %v", msgs)
	}
	wantPerConn(t, sink, 1)
	if sink.Connections() != 1 {
		t.Errorf("%d connections, want 1", sink.Connections())
	}
}

// TestDeadIdleConnectionReplaced: the server dropped the idle connection;
// the next message goes out on a fresh one and nothing is charged to it.
func TestDeadIdleConnectionReplaced(t *testing.T) {
	for name, o := range map[string]smtpsink.Options{"pipelining": {}, "no pipelining": {NoPipelining: true}} {
		t.Run(name, func(t *testing.T) {
			sink := smtpsink.Start(t, o)
			opts := testOptions()
			var logs logbuf.Buffer
			opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			d := shared(t, opts)
			hop := smartHop(sink.Addr())
			expect(t, deliverWith(t, d, hop, numbered(0), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
			sink.DropConnections()
			sink.WaitOpen(t, 0, waitLong)
			res := deliverWith(t, d, hop, numbered(1), rcpts("a@remote.test", "b@remote.test"))
			for _, r := range res {
				expect(t, r, delivery.Delivered, 250, "2.0.0")
			}
			sink.WaitFor(t, 2, waitLong)
			wantPerConn(t, sink, 1, 1)
			if !strings.Contains(logs.String(), "idle connection unusable, reconnecting") {
				t.Errorf("the dead idle connection was not tried first:\n%s", logs.String())
			}
		})
	}
}

// TestIdleTimeoutCloses: an idle connection is closed by its timer.
func TestIdleTimeoutCloses(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	opts := testOptions()
	opts.IdleTimeout = 50 * time.Millisecond
	d := shared(t, opts)
	deliverWith(t, d, smartHop(sink.Addr()), numbered(0), rcpts("a@remote.test"))
	sink.WaitOpen(t, 0, waitLong)
	// The timer takes the connection out of the pool before its QUIT, so
	// once the sink saw it close, the pool is empty.
	if n := d.pool.Len(); n != 0 {
		t.Errorf("%d idle connections after the idle timeout", n)
	}
	// The next message dials again and is delivered.
	expect(t, deliverWith(t, d, smartHop(sink.Addr()), numbered(1), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	wantPerConn(t, sink, 1, 1)
}

// TestCloseQuitsIdle: Close QUITs every idle connection and waits for it;
// after Close, connections are not kept.
func TestCloseQuitsIdle(t *testing.T) {
	a := smtpsink.Start(t, smtpsink.Options{})
	b := smtpsink.Start(t, smtpsink.Options{})
	opts := testOptions()
	opts.IdleTimeout = time.Hour
	d := New(opts)
	deliverWith(t, d, smartHop(a.Addr()), numbered(0), rcpts("a@remote.test"))
	deliverWith(t, d, smartHop(b.Addr()), numbered(1), rcpts("a@remote.test"))
	if n := d.pool.Len(); n != 2 {
		t.Fatalf("%d idle connections, want 2", n)
	}
	a.WaitOpen(t, 1, waitLong)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := d.pool.Len(); n != 0 {
		t.Errorf("%d idle connections after Close", n)
	}
	a.WaitOpen(t, 0, waitLong)
	b.WaitOpen(t, 0, waitLong)
	expect(t, deliverWith(t, d, smartHop(a.Addr()), numbered(2), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	a.WaitOpen(t, 0, waitLong)
	if n := d.pool.Len(); n != 0 {
		t.Errorf("connection pooled after Close")
	}
}

// TestNoReuseAcrossHops: two next hops reaching the same server (here they
// differ in EHLO name) never share a connection.
func TestNoReuseAcrossHops(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := shared(t, testOptions())
	h1, h2 := smartHop(sink.Addr()), smartHop(sink.Addr())
	h2.FQDN = "other.hub.test"
	for i, h := range []delivery.NextHop{h1, h2, h1, h2} {
		deliverWith(t, d, h, numbered(i), rcpts("a@remote.test"))
	}
	msgs := sink.WaitFor(t, 4, waitLong)
	wantPerConn(t, sink, 2, 2)
	for _, m := range msgs {
		want := map[int]string{1: "out.hub.test", 2: "other.hub.test"}[m.Conn]
		if m.Helo != want {
			t.Errorf("connection %d said EHLO %q, want %q", m.Conn, m.Helo, want)
		}
	}
}

// TestConcurrentDeliveriesShareConnections: concurrent Deliver calls for one
// hop each get a connection of their own, and put them back for the next.
func TestConcurrentDeliveriesShareConnections(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := shared(t, testOptions())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 5 {
				r := deliverWith(t, d, smartHop(sink.Addr()), numbered(w*10+i), rcpts("a@remote.test"))[0]
				if r.Status != delivery.Delivered {
					t.Errorf("worker %d message %d: %+v", w, i, r)
				}
			}
		})
	}
	wg.Wait()
	sink.WaitFor(t, 20, waitLong)
	if n := sink.Connections(); n > 4 {
		t.Errorf("%d connections for 4 concurrent senders", n)
	}
}

// TestDropInDataNoDuplicate: a server that vanishes in the middle of DATA
// leaves the message Deferred (not a connection failure), the connection is
// not reused, and the retry delivers exactly one copy.
func TestDropInDataNoDuplicate(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{DropInData: 1})
	d := shared(t, testOptions())
	hop := smartHop(sink.Addr())
	res := deliverWith(t, d, hop, numbered(0), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		expect(t, r, delivery.Deferred, 451, "4.4.2")
		if r.Connection {
			t.Error("drop in DATA marked as a connection failure")
		}
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("sink recorded %d messages from a dropped transaction", n)
	}
	res = deliverWith(t, d, hop, numbered(0), rcpts("a@remote.test", "b@remote.test"))
	for _, r := range res {
		expect(t, r, delivery.Delivered, 250, "2.0.0")
	}
	if msgs := sink.WaitFor(t, 1, waitLong); len(msgs) != 1 {
		t.Errorf("%d copies delivered", len(msgs))
	}
	wantPerConn(t, sink, 0, 1)
}
