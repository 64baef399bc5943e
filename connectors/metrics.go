package connectors

// Metrics of the receive connectors (issue 10; docs/metrics.md lists each
// with its Prometheus name and a query). Instruments come from
// Options.MeterProvider; without one the Service keeps a nil *connMetrics
// and every method below returns at once, so that metrics cost nothing
// (not even an attribute) when they are off.
//
// Label values are bounded: connector names come from the configuration,
// outcomes, reply classes and limits are the constants of this file and of
// the limit settings' names. Addresses never appear.

import (
	"context"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/metric"

	"hubd/internal/otelattr"
)

// Session outcomes (hubd.smtp.sessions), decided when the connection ends.
const (
	sessionRefused  = "refused"    // refused before SMTP: no connector, a stopped one, a connection limit
	sessionQuit     = "quit"       // the client said QUIT
	sessionDropped  = "dropped"    // the client closed the connection without QUIT
	sessionTimeout  = "timeout"    // connection_inactivity_timeout or connection_timeout
	sessionClosed   = "closed"     // we ended it after a 421 (too many errors, a limit, a failed STARTTLS)
	sessionShutdown = "shutdown"   // hubd shut down
	sessionTLSFail  = "tls_failed" // the implicit-TLS handshake failed
)

// Transaction outcomes (hubd.smtp.transactions): a transaction ends at the
// refusal of its MAIL or at the final reply to its DATA or last BDAT.
const (
	transactionAccepted = "accepted"
	transactionRefused  = "refused"
)

// bgCtx is the context of every measurement: no exemplars are recorded.
var bgCtx = context.Background()

// connMetrics are the connectors' instruments; nil: metrics are off.
type connMetrics struct {
	attrs             otelattr.Cache // the attribute sets seen, so that a measurement allocates nothing
	active            metric.Int64UpDownCounter
	sessions          metric.Int64Counter
	transactions      metric.Int64Counter
	messages          metric.Int64Counter
	bytes             metric.Int64Counter
	tarpits           metric.Int64Counter
	tarpitDelay       metric.Float64Counter
	limitRefusals     metric.Int64Counter
	authBackendErrors metric.Int64Counter
	authBlocked       metric.Int64Counter
}

// newConnMetrics creates the instruments from mp; nil mp: nil (off).
func newConnMetrics(mp metric.MeterProvider) (*connMetrics, error) {
	if mp == nil {
		return nil, nil
	}
	m := mp.Meter("hubd/connectors")
	var cm connMetrics
	var errs [10]error
	cm.active, errs[0] = m.Int64UpDownCounter("hubd.smtp.connections.active", metric.WithUnit("{connection}"),
		metric.WithDescription("SMTP connections open now, per receive connector."))
	cm.sessions, errs[1] = m.Int64Counter("hubd.smtp.sessions", metric.WithUnit("{session}"),
		metric.WithDescription("SMTP connections ended, by receive connector and outcome."))
	cm.transactions, errs[2] = m.Int64Counter("hubd.smtp.transactions", metric.WithUnit("{transaction}"),
		metric.WithDescription("Mail transactions ended (MAIL refused, or the final reply to DATA/BDAT), by receive connector, outcome and reply class."))
	cm.messages, errs[3] = m.Int64Counter("hubd.smtp.messages.accepted", metric.WithUnit("{message}"),
		metric.WithDescription("Messages accepted (250 after DATA or the last BDAT), per receive connector."))
	cm.bytes, errs[4] = m.Int64Counter("hubd.smtp.accepted", metric.WithUnit("By"),
		metric.WithDescription("Size of the messages accepted, per receive connector."))
	cm.tarpits, errs[5] = m.Int64Counter("hubd.smtp.tarpit", metric.WithUnit("{reply}"),
		metric.WithDescription("Refusals held back by the tarpit, per receive connector."))
	cm.tarpitDelay, errs[6] = m.Float64Counter("hubd.smtp.tarpit.delay", metric.WithUnit("s"),
		metric.WithDescription("Time refusals were held back by the tarpit (failed AUTH delays included), per receive connector."))
	cm.limitRefusals, errs[7] = m.Int64Counter("hubd.smtp.limit_refusals", metric.WithUnit("{refusal}"),
		metric.WithDescription("Connections, commands and logins refused by a connector limit, by receive connector and limit."))
	cm.authBackendErrors, errs[8] = m.Int64Counter("hubd.smtp.auth.backend_errors", metric.WithUnit("{error}"),
		metric.WithDescription("AUTH attempts answered 454 because the auth_backend was unavailable, by receive connector and backend."))
	cm.authBlocked, errs[9] = m.Int64Counter("hubd.smtp.auth.blocked", metric.WithUnit("{block}"),
		metric.WithDescription("Client sources (or networks) blocked by the brute-force defence, by receive connector and limit."))
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return &cm, nil
}

// Label keys of the measurements.
var (
	connectorKeys        = [3]string{"connector"}
	connectorOutcomeKeys = [3]string{"connector", "outcome"}
	transactionKeys      = [3]string{"connector", "outcome", "reply_class"}
	connectorLimitKeys   = [3]string{"connector", "limit"}
	connectorBackendKeys = [3]string{"connector", "backend"}
)

func (m *connMetrics) connectorAttr(name string) metric.MeasurementOption {
	return m.attrs.Get("connector", connectorKeys, name)
}

// connectionOpened / connectionClosed move the active gauge of a session.
func (m *connMetrics) connectionOpened(connector string) {
	if m != nil {
		m.active.Add(bgCtx, 1, m.connectorAttr(connector))
	}
}

func (m *connMetrics) connectionClosed(connector, outcome string) {
	if m == nil {
		return
	}
	m.active.Add(bgCtx, -1, m.connectorAttr(connector))
	m.session(connector, outcome)
}

// session counts an ended connection; connector is "" for a connection no
// connector would serve.
func (m *connMetrics) session(connector, outcome string) {
	if m != nil {
		m.sessions.Add(bgCtx, 1, m.attrs.Get("session", connectorOutcomeKeys, connector, outcome))
	}
}

// transaction counts a transaction ended by a reply with code.
func (m *connMetrics) transaction(connector string, code int) {
	if m == nil {
		return
	}
	outcome := transactionRefused
	if code/100 == 2 {
		outcome = transactionAccepted
	}
	m.transactions.Add(bgCtx, 1, m.attrs.Get("transaction", transactionKeys, connector, outcome, replyClass(code)))
}

// replyClass is "2xx", "4xx" or "5xx" (RFC 5321 §4.2.1: the first digit).
func replyClass(code int) string {
	switch code / 100 {
	case 2:
		return "2xx"
	case 4:
		return "4xx"
	case 5:
		return "5xx"
	}
	return strconv.Itoa(code/100) + "xx"
}

// accepted counts a message accepted and its size.
func (m *connMetrics) accepted(connector string, size int64) {
	if m == nil {
		return
	}
	attrs := m.connectorAttr(connector)
	m.messages.Add(bgCtx, 1, attrs)
	m.bytes.Add(bgCtx, size, attrs)
}

// tarpitted counts a refusal held back (a failed AUTH's growing delay
// included) and the time it was held.
func (m *connMetrics) tarpitted(connector string, held time.Duration) {
	if m == nil || held <= 0 {
		return
	}
	attrs := m.connectorAttr(connector)
	m.tarpits.Add(bgCtx, 1, attrs)
	m.tarpitDelay.Add(bgCtx, held.Seconds(), attrs)
}

// limitRefusal counts a refusal by the named limit setting.
func (m *connMetrics) limitRefusal(connector, limit string) {
	if m != nil {
		m.limitRefusals.Add(bgCtx, 1, m.attrs.Get("limit", connectorLimitKeys, connector, limit))
	}
}

// authBackendError counts an auth_backend that could not answer.
func (m *connMetrics) authBackendError(connector, backend string) {
	if m != nil {
		m.authBackendErrors.Add(bgCtx, 1, m.attrs.Get("backend", connectorBackendKeys, connector, backend))
	}
}

// authBlock counts a source or network the brute-force defence blocked.
func (m *connMetrics) authBlock(connector, limit string) {
	if m != nil {
		m.authBlocked.Add(bgCtx, 1, m.attrs.Get("blocked", connectorLimitKeys, connector, limit))
	}
}
