package policy

// Authenticated smart hosts: what a send connector proves about itself to
// the smart hosts it relays through.
//
//	send_connector "relay" {
//	  address_spaces   = ["*"]
//	  smart_hosts      = ["smtp.provider.example"]   # port 465: tls = "implicit"
//	  tls              = "implicit"
//	  auth {
//	    username       = "hub@example.com"
//	    password_file  = "/etc/hubd/relay.password"
//	    mechanisms     = ["PLAIN", "LOGIN"]          # the default, in this order
//	    allow_insecure = false                       # the default
//	  }
//	  client_cert_file = "/etc/hubd/tls/hub.pem"    # both or neither
//	  client_key_file  = "/etc/hubd/tls/hub.key"
//	}
//
// The rules, each a diagnostic at the attribute (file:line:col) when broken:
//
//   - auth.username and auth.password_file are required. The password file
//     is read when the configuration is loaded (so a reload re-reads it);
//     one trailing newline ("\n" or "\r\n") is stripped, as editors add
//     one. An unreadable or empty file, or an empty username, is an error.
//     The file's bytes are part of Config.Hash (a new password is a new
//     configuration) but never rendered in diagnostics.
//   - auth.mechanisms lists SASL mechanisms (RFC 4422) in preference order;
//     the client uses the first one the server's EHLO AUTH line offers
//     (RFC 4954 §3). Only PLAIN (RFC 4616) and LOGIN are known, written in
//     any case; an empty list, an unknown or a repeated mechanism is an
//     error. Both send the password in the clear, so:
//   - Credentials go only over TLS whose certificate was verified: with
//     auth, tls defaults to "required" instead of "opportunistic" (which
//     does not verify, RFC 7435 §4, so an attacker in the path would get
//     the password), and tls = "none" or "opportunistic" is an error unless
//     allow_insecure = true. With allow_insecure, the client still sends
//     them only where the connection allows (smtpout).
//   - auth and tls = "implicit" are for smart hosts: on a connector that
//     routes by DNS (dns_routing without smart_hosts) they are errors, so
//     that credentials are never offered to whatever MX a recipient domain
//     names.
//   - tls = "implicit" dials TLS from the first byte (RFC 8314 §3.3) and
//     verifies the certificate as "required" does; a smart host written
//     without a port then gets 465 instead of 25.
//   - client_cert_file and client_key_file come together; the pair is
//     loaded at load time, and one that cannot be read or whose halves do
//     not match is an error. With tls = "none" no certificate could ever be
//     presented, which is an error too.
//
// The password lives in a Secret, whose String, GoString, JSON and slog
// forms are "(redacted)": neither logs, `hubd routes`, the admin API nor an
// error text can show it by accident.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

type sendAuthSchema struct {
	Username          string         `hcl:"username"`
	UsernameRange     hcl.Range      `hcl:"username,attr_value_range"`
	PasswordFile      string         `hcl:"password_file"`
	PasswordFileRange hcl.Range      `hcl:"password_file,attr_value_range"`
	Mechanisms        hcl.Expression `hcl:"mechanisms,optional"`
	AllowInsecure     *bool          `hcl:"allow_insecure,optional"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

// SendAuth is a send connector's login to its smart hosts (RFC 4954).
type SendAuth struct {
	Username string
	Password Secret // the password file's content, one trailing newline stripped
	// Mechanisms are upper-case SASL mechanism names in preference order;
	// default ["PLAIN", "LOGIN"].
	Mechanisms []string
	// AllowInsecure lets credentials go over a connection without TLS.
	AllowInsecure bool
	PasswordFile  string // absolute, for messages
}

// Secret is a string that never shows itself: fmt, JSON and slog render it
// as "(redacted)". Reveal gives the value to the one place that sends it.
type Secret string

const redacted = "(redacted)"

func (s Secret) String() string               { return redacted }
func (s Secret) GoString() string             { return redacted }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// SASL mechanisms a send connector may use, with the default order.
var (
	sendAuthMechanisms       = map[string]bool{"PLAIN": true, "LOGIN": true}
	defaultSendAuthMechanism = []string{"PLAIN", "LOGIN"}
)

// smartHostPort is the port of a smart host written without one.
func smartHostPort(t SendTLS) string {
	if t == SendTLSImplicit {
		return "465" // RFC 8314 §7.3: "submissions"
	}
	return "25"
}

// sendAuth fills sc's Auth and client certificate from s and checks how
// they combine with the connector's TLS and routing (see the file comment).
func (l *loader) sendAuth(s *sendConnectorSchema, sc *SendConnector) {
	mxOnly := sc.DNSRouting && len(sc.SmartHosts) == 0
	if sc.TLS == SendTLSImplicit && mxOnly {
		l.errorf(s.TLSRange, "Implicit TLS needs smart hosts",
			"Send connector %q routes by DNS; tls = \"implicit\" (port 465) is for smart hosts. MX hosts take STARTTLS on port 25.", sc.Name)
	}
	if a := s.Auth; a != nil {
		sc.Auth = l.sendAuthBlock(a)
		switch {
		case mxOnly:
			l.errorf(a.DefRange, "Credentials for smart hosts only",
				"Send connector %q routes by DNS; auth is only for smart_hosts, so that credentials never go to a recipient domain's MX hosts.", sc.Name)
		case sc.TLS == SendTLSNone && !sc.Auth.AllowInsecure:
			l.errorf(s.TLSRange, "Credentials without TLS",
				"Send connector %q has auth with tls = \"none\": the password would cross the network in the clear. Use TLS, or set allow_insecure = true in auth.", sc.Name)
		case s.TLS == nil:
			// Credentials go only to a smart host whose certificate was
			// verified: "opportunistic" would hand them to whoever answers.
			sc.TLS = SendTLSRequired
		case sc.TLS == SendTLSOpportunistic && !sc.Auth.AllowInsecure:
			l.errorf(s.TLSRange, "Credentials over unverified TLS",
				"Send connector %q has auth with tls = \"opportunistic\", which does not verify the smart host's certificate (RFC 7435): whoever intercepts the connection would get the password. Use \"required\" (the default with auth) or \"implicit\", or set allow_insecure = true in auth.", sc.Name)
		}
	}
	l.clientCert(s, sc)
	l.caFile(s, sc)
}

// caFile checks ca_file: PEM certificates that parse, for a connector
// whose TLS verifies.
func (l *loader) caFile(s *sendConnectorSchema, sc *SendConnector) {
	if s.CAFile == nil {
		return
	}
	before := len(l.diags)
	path := l.existingFile(*s.CAFile, s.CAFileRange, "ca_file")
	if len(l.diags) > before {
		return
	}
	pem, err := os.ReadFile(path)
	if err == nil && !x509.NewCertPool().AppendCertsFromPEM(pem) {
		err = errors.New("no PEM certificate in it")
	}
	if err != nil {
		l.errorf(s.CAFileRange, "Unusable ca_file", "%s: %v.", path, err)
		return
	}
	if sc.TLS != SendTLSRequired && sc.TLS != SendTLSImplicit {
		l.errorf(s.CAFileRange, "ca_file without verified TLS",
			"Send connector %q does not verify certificates (tls = %q); ca_file is used with \"required\" or \"implicit\".", sc.Name, sc.TLS)
		return
	}
	sc.CAFile = path
	l.usePath(PathUse{Role: PathTLSCert, Path: path, Setting: "send_connector " + quote(sc.Name) + " ca_file", Range: s.CAFileRange})
}

func (l *loader) sendAuthBlock(a *sendAuthSchema) *SendAuth {
	auth := &SendAuth{Username: a.Username}
	// A missing required attribute is gohcl's diagnostic already (its
	// range is then empty).
	if a.UsernameRange.Filename != "" && (strings.TrimSpace(a.Username) == "" || strings.ContainsAny(a.Username, "\x00\r\n")) {
		l.errorf(a.UsernameRange, "Invalid username", "username must be a non-empty line of text.")
	}
	if a.AllowInsecure != nil {
		auth.AllowInsecure = *a.AllowInsecure
	}
	if a.PasswordFileRange.Filename != "" {
		auth.Password, auth.PasswordFile = l.passwordFile(a.PasswordFile, a.PasswordFileRange)
	}
	items, set := l.stringList(a.Mechanisms)
	if !set {
		auth.Mechanisms = append([]string(nil), defaultSendAuthMechanism...)
		return auth
	}
	if len(items) == 0 {
		l.errorf(a.Mechanisms.Range(), "Empty mechanisms", "List at least one SASL mechanism: \"PLAIN\" or \"LOGIN\".")
	}
	seen := map[string]bool{}
	for _, it := range items {
		m := strings.ToUpper(strings.TrimSpace(it.val))
		switch {
		case !sendAuthMechanisms[m]:
			l.errorf(it.rng, "Unknown SASL mechanism", "Send connectors can log in with \"PLAIN\" or \"LOGIN\", not %q.", it.val)
		case seen[m]:
			l.errorf(it.rng, "Duplicate SASL mechanism", "%s is listed twice.", m)
		default:
			seen[m] = true
			auth.Mechanisms = append(auth.Mechanisms, m)
		}
	}
	return auth
}

// passwordFile reads the password, stripping one trailing newline. Its
// content goes into the configuration hash, never into a diagnostic.
func (l *loader) passwordFile(p string, rng hcl.Range) (Secret, string) {
	before := len(l.diags)
	full := l.existingFile(p, rng, "password_file")
	if len(l.diags) > before {
		return "", full
	}
	src, err := os.ReadFile(full)
	if err != nil {
		l.errorf(rng, "Unreadable password_file", "%s: %v.", full, err)
		return "", full
	}
	l.hashOnly(full, src)
	pw := string(src)
	if t, ok := strings.CutSuffix(pw, "\n"); ok {
		pw = strings.TrimSuffix(t, "\r")
	}
	switch {
	case pw == "":
		l.errorf(rng, "Empty password_file", "%s holds no password.", full)
	case strings.ContainsAny(pw, "\x00\r\n"):
		// Neither PLAIN (RFC 4616 §2: no NUL) nor LOGIN can carry it.
		l.errorf(rng, "Invalid password_file", "%s holds more than one line, or a NUL; the password is the first line.", full)
	}
	return Secret(pw), full
}

// clientCert checks client_cert_file and client_key_file: both or neither,
// a pair that loads, and TLS to present it in.
func (l *loader) clientCert(s *sendConnectorSchema, sc *SendConnector) {
	cert, key, _, _, ok := l.certKeyPair(s.ClientCertFile, s.ClientCertRange, s.ClientKeyFile, s.ClientKeyRange)
	if !ok {
		return
	}
	sc.ClientCertFile, sc.ClientKeyFile = cert, key
	if sc.TLS == SendTLSNone {
		l.errorf(s.TLSRange, "Client certificate without TLS",
			"Send connector %q never uses TLS (tls = \"none\"), so its client certificate would never be presented.", sc.Name)
	}
	prefix := "send_connector " + quote(sc.Name) + " "
	l.usePath(PathUse{Role: PathTLSCert, Path: sc.ClientCertFile, Setting: prefix + "client_cert_file", Range: s.ClientCertRange})
	l.usePath(PathUse{Role: PathTLSKey, Path: sc.ClientKeyFile, Setting: prefix + "client_key_file", Range: s.ClientKeyRange,
		Pair: sc.ClientCertFile})
}

// certKeyPair checks a client_cert_file and client_key_file pair (a send
// connector's, the queue block's): both or neither, both existing, and a
// certificate and key that load together. It returns their resolved paths
// and contents; ok is false when neither is set or a diagnostic was
// reported.
func (l *loader) certKeyPair(certAttr *string, certRng hcl.Range, keyAttr *string, keyRng hcl.Range) (cert, key string, certPEM, keyPEM []byte, ok bool) {
	switch {
	case certAttr == nil && keyAttr == nil:
		return "", "", nil, nil, false
	case keyAttr == nil:
		l.errorf(certRng, "Missing client_key_file", "client_cert_file needs client_key_file beside it.")
		return "", "", nil, nil, false
	case certAttr == nil:
		l.errorf(keyRng, "Missing client_cert_file", "client_key_file needs client_cert_file beside it.")
		return "", "", nil, nil, false
	}
	before := len(l.diags)
	cert = l.existingFile(*certAttr, certRng, "client_cert_file")
	key = l.existingFile(*keyAttr, keyRng, "client_key_file")
	if len(l.diags) > before {
		return "", "", nil, nil, false
	}
	certPEM, err1 := os.ReadFile(cert)
	keyPEM, err2 := os.ReadFile(key)
	if err := errors.Join(err1, err2); err != nil {
		l.errorf(certRng, "Unreadable client certificate", "%v.", err)
		return "", "", nil, nil, false
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		l.errorf(keyRng, "Unusable client certificate",
			"%s and %s are not a usable certificate and key pair: %v.", cert, key, err)
		return "", "", nil, nil, false
	}
	return cert, key, certPEM, keyPEM, true
}
