package connectors

import (
	"errors"
	"net/netip"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"hubd/internal/dovecotauth"
	"hubd/policy"
	"hubd/policy/passhash"
)

// AuthMechanisms implements smtp.AuthSession: the connector's mechanisms,
// which go-smtp advertises only over TLS or with allow_insecure_auth.
// EXTERNAL is advertised only to a client whose certificate verified.
func (s *session) AuthMechanisms() []string {
	out := make([]string, 0, len(s.c.rc.Auth))
	for _, m := range s.c.rc.Auth {
		if m == "external" && s.clientIdentity() == "" {
			continue
		}
		out = append(out, strings.ToUpper(m))
	}
	return out
}

// Auth implements smtp.AuthSession (RFC 4954); a refusal the session earns
// is tarpitted.
func (s *session) Auth(mech string) (sasl.Server, error) {
	srv, err := s.startAuth(mech)
	return srv, s.delay("AUTH", err)
}

func (s *session) startAuth(mech string) (sasl.Server, error) {
	s.mu.Lock()
	inTransaction, authenticated := s.haveMail, s.authUser != ""
	s.mu.Unlock()
	if inTransaction {
		// RFC 4954 §4: AUTH is not permitted during a mail transaction. It
		// would also let MAIL FROM escape the sender check made before AUTH.
		return nil, s.refuse("AUTH", reply(503, "5.5.1", "AUTH not permitted during a mail transaction"))
	}
	if authenticated {
		// RFC 4954 §4: after a successful AUTH, no more AUTH commands.
		return nil, s.refuse("AUTH", reply(503, "5.5.1", "Already authenticated"))
	}
	if s.c.rc.RequireTLS && s.tls == nil {
		return nil, s.refuse("AUTH", reply(530, "5.7.0", "Must issue a STARTTLS command first"))
	}
	offered := false
	for _, m := range s.c.rc.Auth {
		offered = offered || strings.EqualFold(m, mech)
	}
	if offered {
		s.mu.Lock()
		s.authMech = mech
		s.mu.Unlock()
		switch mech {
		case "PLAIN", "LOGIN":
			if err := s.authRefusedHere(); err != nil {
				return nil, err
			}
			if mech == "PLAIN" {
				return saslReplies{sasl.NewPlainServer(s.plain)}, nil
			}
			return saslReplies{&loginServer{check: s.checkPassword}}, nil
		case "EXTERNAL":
			if s.clientIdentity() == "" {
				n := s.logonFailure()
				s.st.log.InfoContext(s.st.ctx, "authentication failed", "mechanism", "EXTERNAL",
					"reason", "no verified client certificate", "failures", n)
				s.authAttempt(mech, "failure", "")
				return nil, s.authReply(n, reply(535, "5.7.8", "No verified client certificate"))
			}
			return saslReplies{sasl.NewExternalServer(s.external)}, nil
		}
	}
	// RFC 4954 §4: a mechanism we do not support.
	return nil, s.refuse("AUTH", reply(504, "5.5.4", "Unrecognized authentication type"))
}

// plain is the RFC 4616 authenticator: an authorization identity other than
// the login itself is not something we grant.
func (s *session) plain(identity, username, password string) error {
	if identity != "" && identity != username {
		return s.checkPassword("", "\x00") // burn the same time, then fail
	}
	return s.checkPassword(username, password)
}

// checkPassword checks a login and password: against the connector's
// auth_backend when it names one (checkWithBackend), else against the
// local logins, mailboxes and users (policy.Config.Credential, hashes by
// policy/passhash). An unknown login, or one without a hash, is checked
// against the connector's dummy hash so that the answer takes the same
// time (RFC 4954 §9 asks servers not to disclose which users exist).
func (s *session) checkPassword(user, password string) error {
	if s.c.backend != nil {
		return s.checkWithBackend(user, password)
	}
	login, hashText := s.c.cfg.Credential(user)
	hash := s.c.dummy
	if login != "" {
		h, err := passhash.Parse(hashText) // validated at load: cannot fail
		if err != nil {
			login = ""
		} else {
			hash = h
		}
	}
	if blocked := s.c.limits.authBlocked(s.st.peer); blocked != "" {
		// Another connection from here tripped the defence while this
		// exchange ran: refuse without checking, as at the AUTH command.
		return s.authBlockedReply(blocked)
	}
	if hash.Verify(password) && login != "" {
		s.authenticated(login, "", "password")
		return nil
	}
	return s.passwordRefused(user)
}

// checkWithBackend asks the connector's auth_backend (Dovecot) to check
// the pair. Dovecot unreachable, too slow or undecided is "454 4.7.0
// Temporary authentication failure" (RFC 4954 §6), logged, and not
// counted as the client's failure; a refusal takes the same path as a
// local one (failure counting, tarpit, 535 5.7.8).
func (s *session) checkWithBackend(user, password string) error {
	if blocked := s.c.limits.authBlocked(s.st.peer); blocked != "" {
		return s.authBlockedReply(blocked)
	}
	req := dovecotauth.Request{Login: user, Password: password, Secured: s.tls != nil, RemoteIP: s.st.peer}
	if ap, err := netip.ParseAddrPort(s.sc.LocalAddr().String()); err == nil {
		req.LocalIP = ap.Addr()
	}
	identity, err := s.c.backend.Authenticate(s.st.ctx, req)
	switch {
	case err == nil:
		s.authenticated(identity, s.c.rc.AuthBackend, "auth_backend "+s.c.rc.AuthBackend)
		return nil
	case errors.Is(err, dovecotauth.ErrRefused):
		return s.passwordRefused(user)
	}
	s.c.svc.meters.authBackendError(s.c.rc.Name, s.c.rc.AuthBackend)
	s.st.log.WarnContext(s.st.ctx, "authentication backend unavailable", "auth_backend", s.c.rc.AuthBackend,
		"socket", s.c.backend.Socket, "user", user, "error", err)
	s.authAttempt(s.mechanism(), "temporary_failure", user)
	return smtpError(reply(454, "4.7.0", "Temporary authentication failure"))
}

// passwordRefused counts a refused login and password against the
// session and the brute-force ledger, tarpits, and returns 535 5.7.8 (or
// 421 at max_logon_failures).
func (s *session) passwordRefused(user string) error {
	source, network, tripped := s.c.limits.authFailed(s.st.peer)
	n := s.logonFailure()
	delay := s.authDelay(source)
	s.st.log.InfoContext(s.st.ctx, "authentication failed", "user", user, "failures", n,
		"source_failures", source, "network_failures", network, "delay", delay)
	s.authAttempt(s.mechanism(), "failure", user)
	if tripped != "" {
		s.c.svc.meters.authBlock(s.c.rc.Name, tripped)
		s.st.log.WarnContext(s.st.ctx, "authentication blocked", "limit", tripped, "user", user,
			"for", s.c.rc.AuthFailureWindow)
	}
	// The delay grows with the address's failures (tarpit.go), the same for
	// known and unknown users.
	s.c.svc.meters.tarpitted(s.c.rc.Name, s.sc.sleep(delay))
	// RFC 4954 §6.
	return s.authReply(n, reply(535, "5.7.8", "Authentication credentials invalid"))
}

// authRefusedHere refuses AUTH PLAIN and LOGIN from an address or network
// the brute-force defence has blocked, before any credentials are read.
func (s *session) authRefusedHere() error {
	blocked := s.c.limits.authBlocked(s.st.peer)
	if blocked == "" {
		return nil
	}
	return s.authBlockedReply(blocked)
}

// authBlockedReply logs a blocked AUTH, counts it against
// max_logon_failures, tarpits it, and returns "454 4.7.0": temporary, the
// block ends with the window (RFC 4954 §6).
func (s *session) authBlockedReply(limit string) error {
	s.c.svc.meters.limitRefusal(s.c.rc.Name, limit)
	n := s.logonFailure()
	s.st.log.WarnContext(s.st.ctx, "refused", "command", "AUTH", "reply", "454 4.7.0", "limit", limit, "failures", n)
	s.authAttempt(s.mechanism(), "blocked", "")
	r := reply(454, "4.7.0", "Temporary authentication failure")
	s.sc.tarpit("AUTH", s.c.rc.TarpitInterval, r)
	return s.authReply(n, r)
}

// logonFailure counts a failed AUTH against max_logon_failures (per
// connection, across STARTTLS) and returns the count.
func (s *session) logonFailure() int {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.authFailures++
	return s.st.authFailures
}

// authReply is the reply to a session's n-th failed AUTH: r, or, at
// max_logon_failures, "421 4.7.0" and the connection ends.
func (s *session) authReply(n int, r *policy.Reply) error {
	if max := s.c.rc.MaxLogonFailures; max > 0 && n >= max {
		s.sc.closeAfterWrite.Store(true)
		return smtpError(reply(421, "4.7.0", "Too many authentication failures"))
	}
	return smtpError(r)
}

// authenticated records a successful AUTH: the session gets the
// Authenticated rights, and its AuthUser is identity; via names the
// auth_backend that vouched for it ("" = local), which decides its
// senders (policy.Config.CheckSenderVia).
func (s *session) authenticated(identity, via, how string) {
	s.mu.Lock()
	s.authUser, s.authVia = identity, via
	s.mu.Unlock()
	s.st.mu.Lock()
	s.st.authUser = identity
	s.st.mu.Unlock()
	s.st.log.InfoContext(s.st.ctx, "authenticated", "auth_user", identity, "with", how)
	s.authAttempt(s.mechanism(), "success", identity)
}

// mechanism is the SASL mechanism of the AUTH exchange in progress.
func (s *session) mechanism() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authMech
}

// external is the RFC 4422 Appendix A authenticator: the identity is the
// verified client certificate's (clientIdentity); an authorization
// identity, if the client gives one, must be that identity.
func (s *session) external(authzid string) error {
	id := s.clientIdentity()
	if id == "" || (authzid != "" && !strings.EqualFold(authzid, id)) {
		n := s.logonFailure()
		s.st.log.InfoContext(s.st.ctx, "authentication failed", "mechanism", "EXTERNAL", "certificate", id,
			"authzid", authzid, "failures", n)
		s.authAttempt("EXTERNAL", "failure", authzid)
		r := reply(535, "5.7.8", "Authentication credentials invalid")
		s.sc.tarpit("AUTH", s.c.rc.TarpitInterval, r)
		return s.authReply(n, r)
	}
	s.authenticated(id, "", "client certificate")
	return nil
}

// clientIdentity is the identity of the session's TLS client certificate
// when it verified against client_ca_file, "" otherwise. It is the
// certificate's first DNS subjectAltName, or, when it has none, its subject
// common name (RFC 6125 §6.4.4 puts SANs first), lower-cased.
//
// go-smtp v0.25.1 hands us the tls.ConnectionState after STARTTLS (and we
// take it from our own tls.Conn for implicit TLS); VerifiedChains is empty
// unless the connector asked for client certificates and one verified.
func (s *session) clientIdentity() string {
	if s.tls == nil || len(s.tls.VerifiedChains) == 0 || len(s.tls.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := s.tls.VerifiedChains[0][0]
	if len(leaf.DNSNames) > 0 {
		return strings.ToLower(leaf.DNSNames[0])
	}
	return strings.ToLower(leaf.Subject.CommonName)
}

// saslReplies makes every error of a SASL exchange an SMTP reply: a
// response that does not parse is 501 5.5.2 (RFC 4954 §4), go-smtp would
// answer 454.
type saslReplies struct{ sasl.Server }

func (r saslReplies) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := r.Server.Next(response)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		err = smtpError(reply(501, "5.5.2", "Malformed authentication response"))
	}
	return challenge, done, err
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login): challenges "Username:" and "Password:". An
// initial response, if the client sent one, is the user name.
type loginServer struct {
	step  int
	user  string
	check func(user, password string) error
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if response == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.step = string(response), 2
		return []byte("Password:"), false, nil
	case 1:
		l.user, l.step = string(response), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check(l.user, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
