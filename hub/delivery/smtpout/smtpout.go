// Package smtpout delivers messages to other MTAs over SMTP: to a send
// connector's smart hosts, or to the MX hosts of the recipients' domain.
//
// It speaks SMTP with its own small client on net/textproto rather than
// go-smtp's, because an MTA needs opportunistic STARTTLS (RFC 7435), which
// go-smtp's client deliberately refuses.
//
// One Deliver call is one attempt: it walks the hop's hosts in order and
// makes one SMTP transaction on the first host that gives an SMTP answer.
//
//   - Hosts: NextHop.SmartHosts ("host:port" or "[ip]:port", comma-separated,
//     port default Options.Port) in order; otherwise the MX hosts of
//     NextHop.Domain by preference, random among equal preference (RFC 5321
//     §5.1), the domain itself when it has no MX, Failed 556 5.1.10 for a
//     null MX (RFC 7505), Failed 550 5.1.2 for a domain that does not exist,
//     Deferred 451 4.4.3 for other DNS errors. A host that refuses the
//     connection, does not greet with 220, refuses EHLO/HELO or MAIL with a
//     4xx, or does not offer TLS that the hop requires, passes the turn to
//     the next; the last one's reason is every recipient's result.
//   - TLS (NextHop.TLS): "opportunistic" (also the default) uses STARTTLS when
//     offered, without verifying the certificate (RFC 7435 §4: encryption
//     against passive attackers is better than none), and on a failed
//     handshake reconnects once in plaintext; "required" verifies the
//     certificate against Options.RootCAs and the host name and never sends
//     mail in plaintext (Deferred 451 4.7.5); "none" never uses TLS.
//   - MAIL FROM carries SIZE= when the server has SIZE (and a message larger
//     than the advertised limit is Failed 552 5.3.4 before sending),
//     BODY=8BITMIME when the envelope declares it and the server has
//     8BITMIME, SMTPUTF8 when the envelope needs it (Failed 553 5.6.7 when the
//     server lacks it), and the RFC 3461 DSN parameters when the server has
//     DSN.
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
	"time"

	"hubd/hub/delivery"
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
	CommandTimeout  time.Duration // greeting, EHLO, STARTTLS, MAIL, RCPT, RSET, QUIT; default 5m (§4.5.3.2.1-3)
	DataInitTimeout time.Duration // reply to DATA; default 2m (§4.5.3.2.4)
	DataTimeout     time.Duration // each block written during DATA; default 3m (§4.5.3.2.5)
	FinalTimeout    time.Duration // reply to the final dot; default 10m (§4.5.3.2.6)

	// RootCAs verifies certificates when TLS is required; nil → system roots.
	RootCAs *x509.CertPool
}

// New returns the SMTP deliverer.
func New(opts Options) delivery.Deliverer {
	d := &deliverer{
		log:         opts.Logger,
		resolver:    opts.Resolver,
		hostname:    opts.Hostname,
		port:        opts.Port,
		dialTimeout: orDefault(opts.DialTimeout, 30*time.Second),
		cmdTimeout:  orDefault(opts.CommandTimeout, 5*time.Minute),
		dataInit:    orDefault(opts.DataInitTimeout, 2*time.Minute),
		dataBlock:   orDefault(opts.DataTimeout, 3*time.Minute),
		final:       orDefault(opts.FinalTimeout, 10*time.Minute),
		roots:       opts.RootCAs,
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.resolver == nil {
		d.resolver = NetResolver{}
	}
	if d.hostname == "" {
		d.hostname, _ = os.Hostname()
		if d.hostname == "" {
			d.hostname = "localhost"
		}
	}
	if d.port == 0 {
		d.port = 25
	}
	return d
}

func orDefault(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

type deliverer struct {
	log      *slog.Logger
	resolver Resolver
	hostname string
	port     int

	dialTimeout, cmdTimeout, dataInit, dataBlock, final time.Duration
	roots                                               *x509.CertPool
}

// Deliver makes one attempt for rcpts; see the package comment.
func (d *deliverer) Deliver(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	results := make([]delivery.Result, len(rcpts))
	if len(rcpts) == 0 {
		return results
	}
	targets, herr := d.targets(ctx, hop.SmartHosts, hop.Domain)
	if herr == nil && len(targets) == 0 {
		herr = &hostError{code: 451, enhanced: "4.4.3", text: "no addresses for " + hop.String()}
	}
	if herr != nil {
		st := delivery.Deferred
		if herr.permanent {
			st = delivery.Failed
		}
		fill(results, delivery.Result{Status: st, Code: herr.code, Enhanced: herr.enhanced, Text: herr.text})
		d.logResults(ctx, hop, msg, rcpts, results)
		return results
	}
	var last delivery.Result
	for _, t := range targets {
		if ctx.Err() != nil {
			break
		}
		tr := &transaction{d: d, hop: hop, msg: msg, rcpts: rcpts, target: t}
		res, next := tr.run(ctx, false)
		if next == retryPlain {
			d.log.InfoContext(ctx, "smtpout: TLS handshake failed, retrying without TLS",
				slog.String("host", t.host), slog.String("addr", t.addr), slog.String("reason", res.Text))
			res, next = tr.run(ctx, true)
		}
		if next == done {
			copy(results, tr.results)
			d.logResults(ctx, hop, msg, rcpts, results)
			return results
		}
		d.log.InfoContext(ctx, "smtpout: host unusable, trying next",
			slog.String("host", t.host), slog.String("addr", t.addr), slog.String("reason", res.Text))
		last = res
	}
	if err := ctx.Err(); err != nil {
		last = delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.2",
			Text: "delivery abandoned: " + err.Error(), RemoteMTA: last.RemoteMTA}
	}
	fill(results, last)
	d.logResults(ctx, hop, msg, rcpts, results)
	return results
}

func fill(results []delivery.Result, r delivery.Result) {
	for i := range results {
		results[i] = r
	}
}

func (d *deliverer) logResults(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient, results []delivery.Result) {
	for i, r := range results {
		level := slog.LevelInfo
		if r.Status != delivery.Delivered {
			level = slog.LevelWarn
		}
		d.log.LogAttrs(ctx, level, "smtp delivery",
			slog.String("queue_id", string(msg.ID)), slog.String("key", rcpts[i].Key),
			slog.String("next_hop", hop.String()), slog.String("remote_mta", r.RemoteMTA),
			slog.String("status", r.Status.String()), slog.Int("code", r.Code),
			slog.String("enhanced", r.Enhanced), slog.String("text", r.Text))
	}
}

// tlsMode is the hop's TLS policy with the default applied.
func tlsMode(hop delivery.NextHop) policy.SendTLS {
	switch hop.TLS {
	case policy.SendTLSNone, policy.SendTLSRequired:
		return hop.TLS
	default:
		return policy.SendTLSOpportunistic
	}
}
