package smtpsink

// AUTH for tests of authenticated relaying (RFC 4954): the sink plays a
// smart host that wants a login.
//
//   - Options.Auth set: AUTH is advertised with AuthOptions.Mechanisms
//     (default PLAIN LOGIN), over TLS only unless Options.InsecureAuth
//     (go-smtp then also refuses AUTH in plaintext with 523 5.7.10).
//   - PLAIN (RFC 4616) and LOGIN (initial response = user name, then the
//     "Password:" challenge; or "Username:" first without one) are checked
//     against AuthOptions.Users. A wrong login gets AuthOptions.Reject,
//     default "535 5.7.8 Authentication credentials invalid".
//   - Every AUTH command is recorded, successful or not, with what the
//     client sent (Auths), so that a test can assert that no credentials
//     were sent at all; a message records the user its session logged in as.

import (
	"bytes"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// AuthOptions configure the sink's AUTH.
type AuthOptions struct {
	Users      map[string]string // user → password
	Mechanisms []string          // advertised; default PLAIN, LOGIN
	// Reject is the reply to a failed login; default 535 5.7.8.
	Reject *smtp.SMTPError
}

// AuthAttempt is one AUTH command the sink received.
type AuthAttempt struct {
	Mechanism string
	User      string // as the client sent it ("" when it never got that far)
	OK        bool
	TLS       bool // the command came over TLS
}

// Auths returns every AUTH command received so far, in order.
func (s *Sink) Auths() []AuthAttempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]AuthAttempt(nil), s.auths...)
}

func (s *Sink) recordAuth(a AuthAttempt) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auths = append(s.auths, a)
	s.notifyLocked()
}

var _ smtp.AuthSession = (*session)(nil)

// AuthMechanisms is go-smtp's hook: nil (no AUTH advertised) without
// Options.Auth.
func (ss *session) AuthMechanisms() []string {
	a := ss.sink.opts.Auth
	if a == nil {
		return nil
	}
	if len(a.Mechanisms) > 0 {
		return a.Mechanisms
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth is go-smtp's hook for one AUTH command.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	a := ss.sink.opts.Auth
	if a == nil {
		return nil, smtp.ErrAuthUnsupported
	}
	check := func(user, pass string) error {
		want, ok := a.Users[user]
		good := ok && want == pass
		ss.sink.recordAuth(AuthAttempt{Mechanism: mech, User: user, OK: good, TLS: ss.tls})
		if !good {
			if a.Reject != nil {
				return a.Reject
			}
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		ss.authUser, ss.authMech = user, mech
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				ss.sink.recordAuth(AuthAttempt{Mechanism: mech, User: user, TLS: ss.tls})
				return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authorization identity refused"}
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	ss.sink.recordAuth(AuthAttempt{Mechanism: mech, TLS: ss.tls})
	return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unrecognized authentication type"}
}

// loginServer is the server side of LOGIN (draft-murchison-sasl-login).
type loginServer struct {
	check     func(user, pass string) error
	user      string
	askedUser bool
	askedPass bool
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch {
	case !l.askedUser && !l.askedPass && resp == nil:
		l.askedUser = true
		return []byte("Username:"), false, nil
	case !l.askedPass:
		l.user, l.askedPass = string(resp), true
		return []byte("Password:"), false, nil
	default:
		if bytes.IndexByte(resp, 0) >= 0 || strings.ContainsAny(l.user, "\x00") {
			return nil, false, errors.New("NUL in LOGIN response")
		}
		return nil, true, l.check(l.user, string(resp))
	}
}
