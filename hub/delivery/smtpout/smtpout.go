// Package smtpout delivers messages to other MTAs over SMTP: to a send
// connector's smart hosts, or to the MX hosts of the recipients' domain.
//
// It speaks SMTP with its own small client on net/textproto rather than
// go-smtp's, because an MTA needs opportunistic STARTTLS (RFC 7435) and
// PIPELINING (RFC 2920), which go-smtp's client does not do.
//
// One Deliver call is one attempt: one SMTP transaction on an idle
// connection to the hop, or on the first of the hop's hosts that gives an
// SMTP answer.
//
//   - Hosts: NextHop.SmartHosts ("host:port" or "[ip]:port", comma-separated,
//     port default Options.Port) in order; otherwise LookupHosts(Domain): the
//     MX hosts by preference, random among equal preference (RFC 5321 §5.1),
//     the domain itself when it has no MX, Failed 556 5.1.10 for a null MX
//     (RFC 7505), Failed 550 5.1.2 for a domain that does not exist,
//     Deferred 451 4.4.3 for other DNS errors. A host that refuses the
//     connection, does not greet with 220, refuses EHLO/HELO or MAIL with a
//     4xx, or does not offer TLS that the hop requires, passes the turn to
//     the next; the last one's reason is every recipient's result.
//   - Connection-level failures: when the attempt fails before any host
//     answered MAIL (a temporary DNS failure, no host reachable or greeting
//     or accepting EHLO, the TLS the hop requires not offered or failed),
//     every Result has Connection set, so that the transport retries the
//     next hop as a whole. Replies to MAIL, RCPT and DATA, size limits and
//     missing extensions are about the message and leave it false.
//   - Connection reuse: after a transaction ends cleanly (final reply to
//     the data, whatever it said, or RSET after every RCPT was refused), the
//     connection is kept idle for the next Deliver with the same NextHop
//     value (never another: TLS policy, EHLO name and hosts belong to the
//     hop), up to Options.MaxMessagesPerConnection transactions, then QUIT.
//     An idle connection is QUIT after Options.IdleTimeout and on Close
//     (hub/delivery/connpool keeps them). A reused connection starts with
//     RSET (RFC 5321 §4.1.1.5), which proves it alive; if RSET fails the
//     connection is dropped and the message goes out on a fresh
//     connection, as if the idle one had never existed.
//   - PIPELINING (RFC 2920), when offered: [RSET,] MAIL and every RCPT go in
//     one write, then the replies are read in order; DATA waits for them
//     (§3.1). Without it, one command at a time.
//   - TLS (NextHop.TLS): "opportunistic" (also the default) uses STARTTLS when
//     offered, without verifying the certificate (RFC 7435 §4: encryption
//     against passive attackers is better than none), and on a failed
//     handshake reconnects once in plaintext; "required" verifies the
//     certificate against Options.RootCAs and the host name and never sends
//     mail in plaintext (Deferred 451 4.7.5); "none" never uses TLS. An
//     idle connection only carries a message whose policy it meets.
//     "implicit" (smart hosts on port 465, RFC 8314 §3.3) starts TLS before
//     the greeting and verifies the certificate (tlsdial.go). The hop's
//     client certificate, if any, is presented in every handshake.
//   - AUTH (auth.go, RFC 4954): a hop with credentials logs in after EHLO
//     (and STARTTLS), never in the clear unless allowed; a refusal, or no
//     usable mechanism, passes the host over as a failure of the next hop
//     (Connection set), never of the message.
//   - REQUIRETLS (RFC 8689): a message whose envelope has RequireTLS goes
//     only over TLS with a verified certificate (whatever NextHop.TLS says,
//     "none" included) to a server that advertises REQUIRETLS, with
//     REQUIRETLS on MAIL FROM; a host that cannot give that is passed over
//     with Failed 550 5.7.30 (RFC 8689 §7.3), never used in plaintext or
//     with unverified TLS. A "TLS-Required: No" header field (RFC 8689 §3,
//     §4.2.2) lets a message go without TLS where the hop requires it
//     (treated as opportunistic); REQUIRETLS wins over it.
//   - Header firewall: unless NextHop.OrgHeaders (send_org_headers), the
//     hub-internal header fields (X-Hubd-*, see internal/message) are
//     removed from the header section as it is sent; the body and the rest
//     of the header stream through unchanged.
//   - MAIL FROM carries SIZE= when the server has SIZE (the size of what
//     is sent; a message larger than the advertised limit is Failed 552
//     5.3.4 before sending), BODY=8BITMIME for 8-bit content when the
//     server has 8BITMIME, SMTPUTF8 when the message needs it, and the RFC
//     3461 DSN parameters when the server has DSN. A message that needs
//     SMTPUTF8 (non-ASCII addresses, or non-ASCII headers with SMTPUTF8
//     requested) is Failed 553 5.6.7 by a server without it (RFC 6531
//     §3.2: no downgrade), the text naming which.
//   - Conversion (hub/delivery/mime7bit, convert.go): for a server without
//     8BITMIME, 8-bit text parts go quoted-printable and other 8-bit parts
//     base64 (RFC 6152 §3); signed content (multipart/signed, DKIM) and
//     8-bit header fields are never converted and fail 554 5.6.3. For
//     every server, no line longer than 998 octets is sent (RFC 5321
//     §4.5.3.1.6): a text part with a longer line is re-encoded
//     quoted-printable, other long lines are folded, and folds are logged.
//   - Per recipient: a 2xx RCPT and a 2xx after the final dot is Delivered; a
//     5xx RCPT is Failed and a 4xx Deferred, for that recipient alone; when
//     no RCPT was accepted DATA is skipped; a 4xx/5xx to DATA or to the final
//     dot applies to every accepted recipient. A network error or timeout is
//     Deferred 451 4.4.1 (no answer) or 4.4.2 (connection lost).
//   - Timeouts follow RFC 5321 §4.5.3.2 and are Options; a cancelled ctx
//     closes the connection and Defers the unsettled recipients.
package smtpout

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"hubd/hub/delivery"
	"hubd/hub/delivery/connpool"
	"hubd/policy"
)

// Options configure the SMTP deliverer. Zero durations take the RFC 5321
// §4.5.3.2 defaults noted on each field.
type Options struct {
	Logger   *slog.Logger // nil → discard
	Resolver Resolver     // nil → NetResolver{} (the system resolver)
	// Hostname is the EHLO name when the hop has no FQDN; default
	// os.Hostname().
	Hostname string
	// Port is the port MX hosts (and smart hosts without a port) are
	// dialled on; default 25. Tests point it at a sink.
	Port int

	DialTimeout     time.Duration // TCP connect; default 30s
	CommandTimeout  time.Duration // greeting, EHLO, STARTTLS, MAIL, RCPT, RSET; default 5m (§4.5.3.2.1-3)
	DataInitTimeout time.Duration // reply to DATA; default 2m (§4.5.3.2.4)
	DataTimeout     time.Duration // each block written during DATA; default 3m (§4.5.3.2.5)
	FinalTimeout    time.Duration // reply to the final dot; default 10m (§4.5.3.2.6)

	// MaxMessagesPerConnection is how many transactions one connection
	// carries before it is QUIT; default 20 (Exchange's and Postfix's
	// figure). 1 turns connection reuse off.
	MaxMessagesPerConnection int
	// IdleTimeout is how long a connection waits idle for the next message
	// to its next hop before it is QUIT; default 5s. Servers drop idle
	// clients after a few minutes (§4.5.3.2.7), and an idle connection
	// holds one of the server's slots, so it is kept only briefly (Postfix
	// keeps 2s).
	IdleTimeout time.Duration

	// RootCAs verifies certificates when TLS is required; nil → system roots.
	RootCAs *x509.CertPool

	// TracerProvider makes the DNS and SMTP client spans (tracing.go),
	// children of the span in Deliver's context; nil → none.
	TracerProvider trace.TracerProvider

	// Slots, when set, shares each next hop's connection limit with the
	// other hubs of a cluster; SlotLimit is that limit, read at each dial
	// (hub.max_per_domain_outbound_connections). See slots.go.
	Slots     Slots
	SlotLimit func() int
}

// Deliverer is the SMTP deliverer (delivery.Deliverer). It is safe for
// concurrent use; Close releases its idle connections.
type Deliverer struct {
	log      *slog.Logger
	resolver Resolver
	hostname string
	port     int
	maxMsgs  int

	dialTimeout, cmdTimeout, dataInit, dataBlock, final time.Duration
	quitTimeout                                         time.Duration
	roots                                               *x509.CertPool

	pool   *connpool.Pool[*conn]
	tracer trace.Tracer

	slots       Slots      // slots.go; nil on a single hub
	slotLimit   func() int // the limit Slots shares
	slotMu      sync.Mutex
	slotWaiters map[string]int // next hop → dials waiting for a slot
}

var _ delivery.Deliverer = (*Deliverer)(nil)

// New returns the SMTP deliverer. Call Close when done with it.
func New(opts Options) *Deliverer {
	d := &Deliverer{
		log:         opts.Logger,
		resolver:    opts.Resolver,
		hostname:    opts.Hostname,
		port:        opts.Port,
		maxMsgs:     opts.MaxMessagesPerConnection,
		dialTimeout: orDefault(opts.DialTimeout, 30*time.Second),
		cmdTimeout:  orDefault(opts.CommandTimeout, 5*time.Minute),
		dataInit:    orDefault(opts.DataInitTimeout, 2*time.Minute),
		dataBlock:   orDefault(opts.DataTimeout, 3*time.Minute),
		final:       orDefault(opts.FinalTimeout, 10*time.Minute),
		roots:       opts.RootCAs,
		slots:       opts.Slots,
		slotLimit:   opts.SlotLimit,
		slotWaiters: map[string]int{},
	}
	// Nothing depends on the reply to QUIT (RFC 5321 §4.1.1.10), so Close
	// and the idle timers do not wait long for it.
	d.quitTimeout = min(d.cmdTimeout, 10*time.Second)
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.resolver == nil {
		d.resolver = NetResolver{}
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	d.tracer = tp.Tracer("hubd/hub/delivery/smtpout")
	d.resolver = tracedResolver{r: d.resolver, tracer: d.tracer}
	if d.hostname == "" {
		d.hostname, _ = os.Hostname()
		if d.hostname == "" {
			d.hostname = "localhost"
		}
	}
	if d.port == 0 {
		d.port = 25
	}
	if d.maxMsgs <= 0 {
		d.maxMsgs = 20
	}
	idle := orDefault(opts.IdleTimeout, 5*time.Second)
	if opts.Slots != nil && opts.IdleTimeout == 0 {
		// An idle connection holds a slot other hubs may wait for
		// (slots.go): kept only long enough for a next message already
		// on its way.
		idle = clusterIdleTimeout
	}
	d.pool = connpool.New(idle, func(c *conn) { c.quit(d.quitTimeout) })
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
	if v > 0 {
		return v
	}
	return def
}

// Deliver makes one attempt for rcpts; see the package comment.
func (d *Deliverer) Deliver(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	results := make([]delivery.Result, len(rcpts))
	if len(rcpts) == 0 {
		return results
	}
	pol, res := d.messageTLS(hop, msg)
	if res != nil {
		fill(results, *res)
		d.logResults(ctx, hop, msg, rcpts, results)
		return results
	}
	if c, ok := d.pool.Take(hop, pol.allows); ok && d.reuse(ctx, hop, pol, msg, rcpts, c, results) {
		d.logResults(ctx, hop, msg, rcpts, results)
		return results
	}
	d.deliverFresh(ctx, hop, pol, msg, rcpts, results)
	d.logResults(ctx, hop, msg, rcpts, results)
	return results
}

// reuse makes the transaction on an idle connection. It returns false when
// nothing was decided (the connection was dead, or the host passed its
// turn): the attempt then starts over on a fresh connection.
func (d *Deliverer) reuse(ctx context.Context, hop delivery.NextHop, pol tlsPolicy, msg delivery.Message, rcpts []delivery.Recipient, c *conn, results []delivery.Result) bool {
	tr := &transaction{d: d, hop: hop, pol: pol, msg: msg, rcpts: rcpts, target: target{host: c.host, addr: c.addr}}
	ctx, span := d.startClient(ctx, tr.target, true)
	c.bind(ctx)
	res, next, f := tr.send(ctx, c, true)
	d.finish(hop, c, f)
	if next == done {
		endClient(span, c, delivery.Result{}, tr.results)
		copy(results, tr.results)
		return true
	}
	endClient(span, c, res, nil)
	d.log.InfoContext(ctx, "smtpout: idle connection unusable, reconnecting",
		slog.String("host", c.host), slog.String("addr", c.addr), slog.String("reason", res.Text))
	return false
}

// deliverFresh resolves the hop's hosts and walks them until one makes the
// transaction.
func (d *Deliverer) deliverFresh(ctx context.Context, hop delivery.NextHop, pol tlsPolicy, msg delivery.Message, rcpts []delivery.Recipient, results []delivery.Result) {
	targets, rerr := d.targets(ctx, hop)
	if rerr == nil && len(targets) == 0 {
		rerr = &policy.Reply{Code: 451, Enhanced: "4.4.3", Text: "no addresses for " + hop.String()}
	}
	if rerr != nil {
		st := delivery.Deferred
		if rerr.Code/100 == 5 {
			st = delivery.Failed
		}
		// A temporary DNS failure is the next hop's, not the message's.
		fill(results, delivery.Result{Status: st, Code: rerr.Code, Enhanced: rerr.Enhanced, Text: rerr.Text,
			Connection: st == delivery.Deferred})
		return
	}
	var last delivery.Result
	connOnly := true // no host got as far as answering MAIL (open's failures all have Connection)
	for _, t := range targets {
		if ctx.Err() != nil {
			break
		}
		tr := &transaction{d: d, hop: hop, pol: pol, msg: msg, rcpts: rcpts, target: t}
		cctx, span := d.startClient(ctx, t, false)
		c, res, next := tr.openWithSlot(cctx, false)
		if next == retryPlain {
			d.log.InfoContext(cctx, "smtpout: TLS handshake failed, retrying without TLS",
				slog.String("host", t.host), slog.String("addr", t.addr), slog.String("reason", res.Text))
			span.AddEvent("smtp.tls_fallback", trace.WithAttributes(attribute.String("reason", res.Text)))
			c, res, next = tr.openWithSlot(cctx, true)
		}
		if next == done {
			var f fate
			res, next, f = tr.send(cctx, c, false)
			d.finish(hop, c, f)
			if next == done {
				endClient(span, c, delivery.Result{}, tr.results)
				copy(results, tr.results)
				return
			}
		}
		endClient(span, c, res, nil)
		connOnly = connOnly && res.Connection
		last = res
		d.log.InfoContext(ctx, "smtpout: host unusable, trying next",
			slog.String("host", t.host), slog.String("addr", t.addr), slog.String("reason", last.Text))
	}
	if err := ctx.Err(); err != nil {
		last = delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.2",
			Text: "delivery abandoned: " + err.Error(), RemoteMTA: last.RemoteMTA}
	} else {
		last.Connection = connOnly
	}
	fill(results, last)
}

// finish disposes of a connection after a transaction: back to the idle
// pool, QUIT, or closed, as its fate and the per-connection limit say.
func (d *Deliverer) finish(hop delivery.NextHop, c *conn, f fate) {
	if !c.release() {
		f = fateDrop // ctx ended: the watcher closed the connection
	}
	switch {
	case f == fateKeep && c.msgs < d.maxMsgs && !d.slotWanted(hop):
		d.pool.Put(hop, c)
	case f == fateKeep || f == fateQuit:
		c.quit(d.quitTimeout)
	default:
		_ = c.close()
	}
}

func fill(results []delivery.Result, r delivery.Result) {
	for i := range results {
		results[i] = r
	}
}

func (d *Deliverer) logResults(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient, results []delivery.Result) {
	for i, r := range results {
		level := slog.LevelInfo
		if r.Status != delivery.Delivered {
			level = slog.LevelWarn
		}
		d.log.LogAttrs(ctx, level, "smtp delivery",
			slog.Bool("connection", r.Connection),
			slog.String("queue_id", string(msg.ID)), slog.String("key", rcpts[i].Key),
			slog.String("next_hop", hop.String()), slog.String("remote_mta", r.RemoteMTA),
			slog.String("status", r.Status.String()), slog.Int("code", r.Code),
			slog.String("enhanced", r.Enhanced), slog.String("text", r.Text))
	}
}

// tlsMode is the hop's TLS policy with the default applied.
func tlsMode(hop delivery.NextHop) policy.SendTLS {
	switch hop.TLS {
	case policy.SendTLSNone, policy.SendTLSRequired, policy.SendTLSImplicit:
		return hop.TLS
	default:
		return policy.SendTLSOpportunistic
	}
}
