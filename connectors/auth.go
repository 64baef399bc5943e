package connectors

import (
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// AuthMechanisms implements smtp.AuthSession: the connector's mechanisms,
// which go-smtp advertises only over TLS or with allow_insecure_auth.
func (s *session) AuthMechanisms() []string {
	out := make([]string, 0, len(s.c.rc.Auth))
	for _, m := range s.c.rc.Auth {
		out = append(out, strings.ToUpper(m))
	}
	return out
}

// Auth implements smtp.AuthSession (RFC 4954).
func (s *session) Auth(mech string) (sasl.Server, error) {
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
		switch mech {
		case "PLAIN":
			return saslReplies{sasl.NewPlainServer(s.plain)}, nil
		case "LOGIN":
			return saslReplies{&loginServer{check: s.checkPassword}}, nil
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

// checkPassword checks a login against the mailbox's bcrypt hash. An unknown
// user, or one without a hash, is checked against the connector's dummy hash
// so that the answer takes the same time (RFC 4954 §9 asks servers not to
// disclose which users exist).
func (s *session) checkPassword(user, password string) error {
	mb := s.c.cfg.MailboxFor(user)
	hash := s.c.dummy
	if mb != nil && mb.PasswordHash != "" {
		hash = []byte(mb.PasswordHash)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	if err == nil && mb != nil && mb.PasswordHash != "" {
		s.mu.Lock()
		s.authUser = mb.Address
		s.mu.Unlock()
		s.st.mu.Lock()
		s.st.authUser = mb.Address
		s.st.mu.Unlock()
		s.st.log.Info("authenticated", "auth_user", mb.Address)
		return nil
	}
	s.st.mu.Lock()
	s.st.authFailures++
	n := s.st.authFailures
	s.st.mu.Unlock()
	s.st.log.Info("authentication failed", "user", user, "failures", n)
	if max := s.c.rc.MaxLogonFailures; max > 0 && n >= max {
		s.sc.closeAfterWrite.Store(true)
		return smtpError(reply(421, "4.7.0", "Too many authentication failures"))
	}
	// RFC 4954 §6.
	return smtpError(reply(535, "5.7.8", "Authentication credentials invalid"))
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
