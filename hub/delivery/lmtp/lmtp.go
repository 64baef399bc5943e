// Package lmtp delivers messages to a local LMTP server (RFC 2033), such as
// Dovecot's, for mailboxes configured with `lmtp = "unix:/path"` or
// `lmtp = "host:port"`. The LMTP server, not the hub, then stores the mail.
//
// It uses go-smtp's client (smtp.NewClientLMTP). That is enough here, unlike
// for SMTP to other MTAs (hub/delivery/smtpout): an LMTP server is local and
// trusted, so there is no opportunistic STARTTLS to negotiate and no
// pipelining to gain, and the client already reads the one reply per
// accepted recipient that LMTP sends after the final dot.
//
// What it promises, for one Deliver call (one attempt):
//
//   - One LMTP session: LHLO, MAIL FROM, one RCPT per distinct address, DATA
//     (dot-stuffed by the client), then one reply per accepted recipient in
//     RCPT order (RFC 2033 §4.2), then QUIT. Recipients that share an address
//     get one RCPT and share its outcome, since the server would otherwise
//     store two copies and the client reports replies by address.
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
//     §3.2); 8-bit content declared 8BITMIME without 8BITMIME 554 5.6.3 (RFC
//     6152 §3).
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
	"net"
	"os"
	"strings"
	"time"

	"hubd/hub/delivery"
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
}

// Deliverer is the LMTP deliverer. It holds no connection between calls and
// is safe for concurrent use.
type Deliverer struct {
	log         *slog.Logger
	hostname    string
	dialTimeout time.Duration
	cmdTimeout  time.Duration
	dataTimeout time.Duration
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
	if d.hostname == "" {
		d.hostname, _ = os.Hostname()
		if d.hostname == "" {
			d.hostname = "localhost"
		}
	}
	return d
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// Deliver makes one LMTP session with hop.SmartHosts for rcpts and returns
// one Result per recipient, in order. See the package comment.
func (d *Deliverer) Deliver(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	s := newSession(d, hop, msg, rcpts)
	s.run(ctx)
	for i, r := range rcpts {
		res := s.results[i]
		d.log.LogAttrs(ctx, res.Status.LogLevel(), "lmtp delivery",
			slog.String("queue_id", string(msg.ID)), slog.String("key", r.Key),
			slog.String("rcpt", r.Address), slog.String("server", hop.SmartHosts),
			slog.String("status", res.Status.String()), slog.String("reply", res.String()))
	}
	return s.results
}

// dial connects to addr: "unix:/path" is a unix socket, anything else
// "host:port" over TCP.
func (d *Deliverer) dial(ctx context.Context, addr string) (net.Conn, error) {
	dialer := net.Dialer{Timeout: d.dialTimeout}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return dialer.DialContext(ctx, "unix", path)
	}
	return dialer.DialContext(ctx, "tcp", addr)
}

func (d *Deliverer) lhloName(hop delivery.NextHop) string {
	if hop.FQDN != "" {
		return hop.FQDN
	}
	return d.hostname
}
