package smtpout

// SMTP AUTH to smart hosts (RFC 4954), when the hop has credentials
// (NextHop.Auth, from a send connector's auth block):
//
//   - When: after EHLO, and after STARTTLS and the second EHLO when TLS is
//     used (RFC 4954 §4: AUTH follows the security layer), before MAIL. A
//     reused connection is already authenticated (RSET does not undo AUTH,
//     RFC 4954 §4) and is only ever reused for an equal NextHop, whose
//     credentials are the same.
//   - Never in the clear, and never to a server whose certificate was not
//     verified (opportunistic TLS), unless allowed: PLAIN (RFC 4616) and LOGIN send
//     the password as it is, so on a connection without TLS (the server
//     offered no STARTTLS, refused it, or the handshake failed and
//     opportunistic TLS fell back to plaintext) and without allow_insecure
//     no AUTH command is sent. The host is passed over with Deferred 451
//     4.7.10, the RFC 5248 registry's "Encryption Needed" (an external
//     privacy layer is needed to use the mechanism; class 4 because the
//     message waits).
//   - Which mechanism: the first of NextHop.Auth.Mechanisms that the
//     server's EHLO AUTH line (RFC 4954 §3; the old "AUTH=" form too)
//     offers. None offered (or no AUTH at all): Deferred 451 4.7.0, the
//     text naming what was configured and what was offered.
//   - The exchange: "AUTH mech initial-response" (RFC 4954 §4: "=" for an
//     empty one; sent after a bare 334 instead when it would make the line
//     longer than 512 octets), then one base64 response per 334 challenge.
//     A challenge the client cannot answer is cancelled with "*" (§4). 235
//     is success; anything else fails.
//   - A refusal (535 5.7.8 for bad credentials, 454 4.7.0, 534 5.7.9, any
//     4xx or 5xx) is about the hop's credentials, never the message: the
//     host is passed over with Deferred 451, the server's enhanced code
//     made class 4 (5.7.8 → 4.7.8; 4.7.0 when it gave none), and a text
//     that quotes its reply. When every host fails this way each Result
//     has Connection set, so the transport puts the next hop's queue in
//     Retry with that text and no message is bounced for it.
//   - Every failure above is logged at Error, once per host tried, with
//     the user name and the server's reply; the password never appears in
//     a log, a Result or a span. The smtp.client span gets the mechanism
//     (smtp.auth.mechanism) and an "smtp.auth" event with the outcome.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub/delivery"
)

// maxAuthSteps bounds the challenges one AUTH exchange may take: PLAIN
// needs none and LOGIN one, so a server asking for more is broken.
const maxAuthSteps = 5

// authenticate logs in when the hop has credentials; plain says the
// connection is a plaintext retry after a failed TLS handshake. It
// returns done when the session may go on to MAIL.
func (tr *transaction) authenticate(ctx context.Context, c *conn, plain bool) (delivery.Result, nextAction) {
	a := tr.hop.Auth
	if a.Username == "" {
		return delivery.Result{}, done
	}
	host := tr.target.host
	if !c.tls && !a.AllowInsecure {
		why := host + " does not offer STARTTLS"
		switch {
		case plain:
			why = "the TLS handshake with " + host + " failed"
		case c.has("STARTTLS"):
			why = host + " refused STARTTLS"
		}
		c.quit(tr.d.quitTimeout)
		return tr.authFailed(ctx, "", tr.deferred(451, "4.7.10",
			"not sending credentials without TLS: "+why+" (auth allow_insecure is off)")), nextHost
	}
	if c.tls && !c.verified && !a.AllowInsecure {
		// Policy refuses auth with opportunistic TLS; a hop built
		// otherwise still never hands the password to an unverified peer.
		c.quit(tr.d.quitTimeout)
		return tr.authFailed(ctx, "", tr.deferred(451, "4.7.10",
			"not sending credentials over TLS whose certificate was not verified: "+host+" (auth allow_insecure is off)")), nextHost
	}
	offered := c.authMechanisms()
	mech := chooseMechanism(a.Mechanisms, offered)
	if mech == "" {
		c.quit(tr.d.quitTimeout)
		off := "none"
		if len(offered) > 0 {
			off = strings.Join(offered, " ")
		}
		return tr.authFailed(ctx, "", tr.deferred(451, "4.7.0", fmt.Sprintf(
			"%s offers no usable AUTH mechanism: configured %s, offered %s", host, strings.ReplaceAll(a.Mechanisms, ",", " "), off))), nextHost
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("smtp.auth.mechanism", mech))
	var client sasl.Client
	switch mech {
	case sasl.Plain:
		client = sasl.NewPlainClient("", a.Username, a.Password.Reveal()) // RFC 4616 §2: no authorization identity
	default:
		client = sasl.NewLoginClient(a.Username, a.Password.Reveal())
	}
	r, err := c.auth(client, tr.d.cmdTimeout)
	switch {
	case errors.Is(err, errAuthAborted):
		c.quit(tr.d.quitTimeout)
		return tr.authFailed(ctx, mech, tr.deferred(451, "4.7.0", fmt.Sprintf("AUTH %s with %s: %v", mech, host, err))), nextHost
	case err != nil:
		return tr.authFailed(ctx, mech, tr.netResult(ctx, "4.4.2", "AUTH", err)), nextHost
	case r.Code != 235:
		c.quit(tr.d.quitTimeout)
		enhanced := "4.7.0"
		if r.Enhanced != "" {
			enhanced = "4" + r.Enhanced[1:]
		}
		return tr.authFailed(ctx, mech, tr.deferred(451, enhanced, fmt.Sprintf(
			"%s refused AUTH %s for %s: %s", host, mech, a.Username, r.String()))), nextHost
	}
	trace.SpanFromContext(ctx).AddEvent("smtp.auth", trace.WithAttributes(
		attribute.String("smtp.auth.mechanism", mech), attribute.Bool("smtp.auth.success", true)))
	return delivery.Result{}, done
}

// authFailed logs an authentication failure loudly and records it in the
// span; res is the host's Result.
func (tr *transaction) authFailed(ctx context.Context, mech string, res delivery.Result) delivery.Result {
	tr.d.log.ErrorContext(ctx, "smtpout: smart host authentication failed",
		slog.String("next_hop", tr.hop.String()), slog.String("host", tr.target.host), slog.String("addr", tr.target.addr),
		slog.String("user", tr.hop.Auth.Username), slog.String("mechanism", mech),
		slog.Int("code", res.Code), slog.String("enhanced", res.Enhanced), slog.String("reason", res.Text))
	trace.SpanFromContext(ctx).AddEvent("smtp.auth", trace.WithAttributes(
		attribute.String("smtp.auth.mechanism", mech), attribute.Bool("smtp.auth.success", false),
		attribute.String("reason", res.Text)))
	return res
}

// chooseMechanism is the first of configured (comma-joined) that offered
// has, or "".
func chooseMechanism(configured string, offered []string) string {
	for _, m := range strings.Split(configured, ",") {
		for _, o := range offered {
			if strings.EqualFold(m, o) {
				return m
			}
		}
	}
	return ""
}

// authMechanisms are the SASL mechanisms the last EHLO advertised, upper
// case: "AUTH PLAIN LOGIN" (RFC 4954 §3), and the pre-standard
// "AUTH=PLAIN LOGIN" some servers still send.
func (c *conn) authMechanisms() []string {
	var out []string
	add := func(params string) {
		for _, m := range strings.Fields(params) {
			out = append(out, strings.ToUpper(m))
		}
	}
	if p, ok := c.ext["AUTH"]; ok {
		add(p)
	}
	for kw, p := range c.ext {
		if m, ok := strings.CutPrefix(kw, "AUTH="); ok {
			add(m + " " + p)
		}
	}
	return out
}

// errAuthAborted: the client cancelled the exchange (a challenge it could
// not answer, or too many of them).
var errAuthAborted = errors.New("authentication exchange cancelled")

// auth runs one AUTH exchange (RFC 4954 §4) and returns the server's final
// reply (235 on success). A network error is returned as is; a cancelled
// exchange wraps errAuthAborted.
func (c *conn) auth(client sasl.Client, timeout time.Duration) (reply, error) {
	mech, ir, err := client.Start()
	if err != nil {
		return reply{}, fmt.Errorf("%w: %v", errAuthAborted, err)
	}
	line := "AUTH " + mech
	if ir != nil {
		enc := base64.StdEncoding.EncodeToString(ir)
		if enc == "" {
			enc = "=" // RFC 4954 §4: an empty initial response
		}
		// RFC 4954 §4: an initial response that would make the command
		// longer than 512 octets (RFC 5321 §4.5.3.1.4) waits for a 334.
		if len(line)+1+len(enc)+2 <= 512 {
			line += " " + enc
			ir = nil
		}
	}
	r, err := c.cmd(timeout, "%s", line)
	for step := 0; err == nil && r.Code == 334; step++ {
		var resp []byte
		if ir != nil {
			resp, ir = ir, nil
		} else {
			resp, err = answer(client, r, step)
			if err != nil {
				// RFC 4954 §4: "*" cancels; the server answers 501.
				if _, cerr := c.cmd(timeout, "*"); cerr != nil {
					return reply{}, cerr
				}
				return reply{}, err
			}
		}
		r, err = c.cmd(timeout, "%s", base64.StdEncoding.EncodeToString(resp))
	}
	return r, err
}

// answer is the client's response to the 334 challenge r.
func answer(client sasl.Client, r reply, step int) ([]byte, error) {
	if step >= maxAuthSteps {
		return nil, fmt.Errorf("%w: more than %d challenges", errAuthAborted, maxAuthSteps)
	}
	chal, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.text()))
	if err != nil {
		return nil, fmt.Errorf("%w: challenge is not base64: %q", errAuthAborted, r.text())
	}
	resp, err := client.Next(chal)
	if err != nil {
		return nil, fmt.Errorf("%w: challenge %q: %v", errAuthAborted, chal, err)
	}
	return resp, nil
}
