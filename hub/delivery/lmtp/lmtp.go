// Package lmtp delivers messages to a local LMTP server (RFC 2033), such as
// Dovecot's, for mailboxes configured with `lmtp = "unix:/path"` or
// `lmtp = "host:port"`. The LMTP server, not the hub, then stores the mail.
//
// It uses go-smtp's client (smtp.NewClientLMTP). That is enough here, unlike
// for SMTP to other MTAs (hub/delivery/smtpout): an LMTP server is local and
// trusted, so there is no opportunistic STARTTLS to negotiate, and the
// client already reads the one reply per accepted recipient that LMTP sends
// after the final dot. The idle connection pool is smtpout's
// (hub/delivery/connpool).
//
// What it promises, for one Deliver call (one attempt):
//
//   - One LMTP transaction: MAIL FROM, one RCPT per distinct address, DATA
//     (dot-stuffed by the client), then one reply per accepted recipient in
//     RCPT order (RFC 2033 §4.2). Recipients that share an address get one
//     RCPT and share its outcome, since the server would otherwise store
//     two copies and the client reports replies by address. The address is
//     the one the categorizer chose: for a mailbox, its primary address
//     with the subaddress it was addressed with (alice+news@...), so the
//     server can file by detail (Dovecot's lmtp_save_to_detail_mailbox,
//     Sieve's envelope :detail) and write it in Delivered-To.
//   - RCPT carries ORCPT (RFC 3461 §4.2) when the server offers DSN and the
//     recipient's envelope had one, so a server that records the original
//     recipient (Dovecot's lmtp_hdr_delivery_address = original) can. No
//     NOTIFY is passed on: the hub reports the final delivery itself.
//   - Connection reuse, as smtpout does it: a session starts with the
//     greeting and LHLO (RFC 2033 §4.1); after a transaction that ended
//     cleanly (every reply after the dot read, or MAIL or every RCPT
//     refused) the connection waits idle for the next Deliver to the same
//     NextHop, up to Options.MaxMessagesPerConnection transactions, then
//     QUIT. An idle connection is QUIT after Options.IdleTimeout and on
//     Close. A reused connection starts with RSET (RFC 5321 §4.1.1.5) and
//     LHLO, which prove it alive; if either fails it is closed and the
//     message goes out on a fresh connection, as if the idle one had never
//     existed. A connection that broke, timed out or answered out of
//     protocol is closed, never reused.
//   - Per recipient: a 2xx is Delivered, a 4xx Deferred, a 5xx Failed, each
//     with the server's code, enhanced code (X.0.0 when it sent none) and
//     text; RemoteMTA is the server address as configured. A RCPT refusal
//     settles that recipient alone; the other replies come after the dot.
//   - Connection failures: an unreachable server, a refused or missing
//     greeting, a failed LHLO or a timeout before MAIL makes every recipient
//     Deferred 451 4.4.1 with Result.Connection set (the transport then puts
//     the whole next hop in Retry). A connection lost or timed out later is
//     Deferred 451 4.4.2 for every recipient not yet settled: a recipient is
//     never Delivered without the server's reply for it.
//   - MAIL FROM carries SIZE= when the server has SIZE (and a message larger
//     than the advertised limit is Failed 552 5.3.4 before sending, RFC 1870
//     §6.1), BODY=8BITMIME whenever the server has 8BITMIME (go-smtp's client
//     always declares it then; harmless for 7-bit mail, RFC 6152 §2), and
//     SMTPUTF8 when the envelope asks for it or an address needs it and the
//     server has it. Mail that needs what the server lacks is Failed:
//     non-ASCII addresses or header without SMTPUTF8 553 5.6.7 (RFC 6531
//     §3.2; the text names the address, or says the header needs it);
//     8-bit content declared 8BITMIME without 8BITMIME 554 5.6.3 (RFC 6152
//     §3). The message goes as received, with no conversion: the LMTP
//     server is the final store, not another hop.
//   - Timeouts (Options): DialTimeout for the connection; CommandTimeout for
//     the greeting and each command reply (RFC 5321 §4.5.3.2); DataTimeout
//     for each write of the message and for all the replies after the dot.
//     A cancelled ctx closes the connection and Defers the unsettled
//     recipients 451 4.4.2 without Connection (the server is not to blame).
//   - A queued message that cannot be read is Deferred 451 4.3.0 before any
//     connection is made.
package lmtp

import (
	"context"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"hubd/hub/delivery"
	"hubd/hub/delivery/connpool"
)

// Options configure the LMTP deliverer. Zero durations take the defaults
// noted on each field.
type Options struct {
	Logger *slog.Logger // nil → discard
	// Hostname is the LHLO name when the hop has no FQDN; default
	// os.Hostname().
	Hostname string
	// DialTimeout bounds connecting to the server; default 30s.
	DialTimeout time.Duration
	// CommandTimeout bounds the greeting and each command reply; default
	// 5m (RFC 5321 §4.5.3.2.1–4).
	CommandTimeout time.Duration
	// DataTimeout bounds each write of the message and, separately, the
	// wait for all the per-recipient replies after the final dot; default
	// 10m (RFC 5321 §4.5.3.2.6).
	DataTimeout time.Duration

	// MaxMessagesPerConnection is how many transactions one connection
	// carries before it is QUIT; default 100. A local LMTP server is cheap
	// to keep talking to (Postfix's lmtp client sets no limit at all), but
	// a bound spreads the load over the server's processes and retires a
	// session before it grows old. 1 turns connection reuse off.
	MaxMessagesPerConnection int
	// IdleTimeout is how long a connection waits idle for the next message
	// before it is QUIT; default 5s, as smtpout (Postfix keeps 2s).
	IdleTimeout time.Duration
	// TracerProvider makes the lmtp.client span (tracing.go), a child of
	// the span in Deliver's context; nil → none.
	TracerProvider trace.TracerProvider
}

// Deliverer is the LMTP deliverer. It is safe for concurrent use; Close
// releases its idle connections.
type Deliverer struct {
	log         *slog.Logger
	hostname    string
	dialTimeout time.Duration
	cmdTimeout  time.Duration
	dataTimeout time.Duration
	quitTimeout time.Duration
	maxMsgs     int

	pool   *connpool.Pool[*client]
	tracer trace.Tracer
}

var _ delivery.Deliverer = (*Deliverer)(nil)

// New returns the LMTP deliverer.
func New(opts Options) *Deliverer {
	d := &Deliverer{
		log:         opts.Logger,
		hostname:    opts.Hostname,
		dialTimeout: orDefault(opts.DialTimeout, 30*time.Second),
		cmdTimeout:  orDefault(opts.CommandTimeout, 5*time.Minute),
		dataTimeout: orDefault(opts.DataTimeout, 10*time.Minute),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	d.tracer = tp.Tracer("hubd/hub/delivery/lmtp")
	if d.hostname == "" {
		d.hostname, _ = os.Hostname()
		if d.hostname == "" {
			d.hostname = "localhost"
		}
	}
	// Every recipient is settled before QUIT, so its reply is not worth a
	// long wait.
	d.quitTimeout = min(d.cmdTimeout, 10*time.Second)
	d.maxMsgs = opts.MaxMessagesPerConnection
	if d.maxMsgs <= 0 {
		d.maxMsgs = 100
	}
	d.pool = connpool.New(orDefault(opts.IdleTimeout, 5*time.Second), d.quit)
	return d
}

// Close QUITs every idle connection and waits for that. Deliver calls still
// running finish their transaction and then QUIT instead of keeping the
// connection; the Deliverer stays usable, without reuse.
func (d *Deliverer) Close() error {
	d.pool.Close()
	return nil
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// Deliver makes one LMTP transaction with hop.SmartHosts for rcpts, on an
// idle connection or a new one, and returns one Result per recipient, in
// order. See the package comment.
func (d *Deliverer) Deliver(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	s := newSession(d, hop, msg, rcpts)
	ctx, span := d.startClient(ctx, s.server)
	s.run(ctx)
	endClient(span, s.results)
	for i, r := range rcpts {
		res := s.results[i]
		d.log.LogAttrs(ctx, res.Status.LogLevel(), "lmtp delivery",
			slog.String("queue_id", string(msg.ID)), slog.String("key", r.Key),
			slog.String("rcpt", r.Address), slog.String("server", hop.SmartHosts),
			slog.String("status", res.Status.String()), slog.String("reply", res.String()))
	}
	return s.results
}

func (d *Deliverer) lhloName(hop delivery.NextHop) string {
	if hop.FQDN != "" {
		return hop.FQDN
	}
	return d.hostname
}
