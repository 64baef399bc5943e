package policy

// Logins apart from mailboxes (issue 9): `user` blocks and hub.users_file
// give submission credentials that have no local mailbox, each with the
// senders it may use; `auth_backend` blocks name an outside password
// database (Dovecot's auth socket) a receive connector may check
// passwords against instead.

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/hcl/v2"

	"hubd/policy/passhash"
)

// User is a login with no mailbox: it may authenticate (AUTH PLAIN or
// LOGIN) and then send as its Senders. Defined by
//
//	user "alice@example.com" {
//	  password_hash = "$argon2id$v=19$..."        # or bcrypt; see policy/passhash
//	  senders       = ["alice@example.com", "@example.org"]
//	}
//
// or by a line of hub.users_file, "login:hash[:sender,sender...]" (blank
// lines and lines starting with '#' are skipped; fields are trimmed).
// senders defaults to the login itself when the login is an address;
// otherwise it must be given. A login is one credential: the same login in
// two user definitions, or a user login that is an address of a mailbox,
// is a configuration error.
type User struct {
	Login        string // canonical (lower-case address, or lower-case name)
	PasswordHash string // validated by policy/passhash at load time
	// Senders are the MAIL FROM addresses the login may use: canonical
	// addresses ("alice@example.com"; their RFC 5233 subaddresses are
	// allowed too) and domains written "@example.com" (any local part).
	Senders []string
	Source  string // "file:line" of the definition, for messages
}

// AuthBackendType names the protocol of an auth_backend.
type AuthBackendType string

// AuthDovecot is Dovecot's authentication protocol (the client side
// Postfix's smtpd_sasl_type = dovecot speaks), over a unix socket.
const AuthDovecot AuthBackendType = "dovecot"

// AuthBackend is an outside password database:
//
//	auth_backend "dovecot" {
//	  socket  = "/run/dovecot/auth-client"   # a unix socket; relative paths resolve against the file
//	  timeout = "5s"                          # per authentication (connect, handshake, answer)
//	  senders_domain_match = false
//	}
//
// A login Dovecot accepts may send as the login itself when it is an
// address (and its subaddresses), as every address of the hubd mailbox
// of that address if there is one, and, with senders_domain_match, as any
// address at the login's domain. Nothing else: give such users a sender
// map in Dovecot's terms by making them mailboxes here, or any_sender.
type AuthBackend struct {
	Name               string
	Type               AuthBackendType // default "dovecot", the only one
	Socket             string          // unix socket path
	Timeout            time.Duration   // default 5s
	Service            string          // service= sent to Dovecot, default "smtp" (passdb rules may match on it)
	SendersDomainMatch bool
}

// AuthBackend returns the named auth backend, or nil.
func (c *Config) AuthBackend(name string) *AuthBackend {
	for i := range c.AuthBackends {
		if c.AuthBackends[i].Name == name {
			return &c.AuthBackends[i]
		}
	}
	return nil
}

// Credential returns the password hash of a local login — a mailbox
// address (primary or extra) or a user login — or "" when the login is
// unknown or cannot log in. Logins are case-insensitive.
func (c *Config) Credential(login string) (canonical, hash string) {
	key := lookupKey(login)
	if u := c.userByLogin[key]; u != nil {
		return u.Login, u.PasswordHash
	}
	if mb := c.mailboxByAddress[key]; mb != nil && mb.PasswordHash != "" {
		return mb.Address, mb.PasswordHash
	}
	return "", ""
}

// UserFor returns the user with that login, or nil.
func (c *Config) UserFor(login string) *User { return c.userByLogin[lookupKey(login)] }

// loginOwner records where each login was defined, across user blocks,
// the users file and mailboxes.
type loginOwner map[string]string

func (l *loader) buildUsers() {
	owners := loginOwner{}
	for _, mb := range l.cfg.Mailboxes {
		owners[mb.Address] = "mailbox \"" + mb.Address + "\""
		for _, a := range mb.Addresses {
			owners[a] = "mailbox \"" + mb.Address + "\""
		}
	}
	for _, s := range l.schema.Users {
		login, ok := l.login(s.Login, s.LoginRange)
		if !ok {
			continue
		}
		u := User{Login: login, Source: rangeLine(s.DefRange)}
		if !l.claimLogin(owners, u, s.Login, s.LoginRange) {
			continue
		}
		u.PasswordHash = l.passwordHash(s.PasswordHash, s.PasswordHashRange)
		items, set := l.stringList(s.Senders)
		for _, it := range items {
			if sender, ok := l.sender(it.val, it.rng); ok {
				u.Senders = append(u.Senders, sender)
			}
		}
		switch {
		case set && len(items) == 0:
			l.errorf(s.Senders.Range(), "Empty senders",
				"User %q needs at least one sender; leave senders out to default to the login itself, if it is an address.", s.Login)
		case !set:
			u.Senders = l.defaultSenders(u.Login, s.LoginRange)
		}
		l.cfg.Users = append(l.cfg.Users, u)
	}
	if len(l.schema.Hubs) > 0 && l.schema.Hubs[0].UsersFile != nil {
		h := l.schema.Hubs[0]
		l.readUsersFile(owners, *h.UsersFile, h.UsersFileRange)
	}
}

// login checks a login name: an address (canonicalised), or a name
// without blanks, control characters or ':' (the users file's separator).
func (l *loader) login(v string, rng hcl.Range) (string, bool) {
	if strings.Contains(v, "@") {
		return l.address(v, rng, "Invalid login")
	}
	if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		l.errorf(rng, "Invalid login", "A login is an address or a name without blanks, control characters or ':'; %q is neither.", v)
		return "", false
	}
	return strings.ToLower(v), true
}

// claimLogin reports a login defined before (as a user or a mailbox).
func (l *loader) claimLogin(owners loginOwner, u User, written string, rng hcl.Range) bool {
	if first, taken := owners[u.Login]; taken {
		l.errorf(rng, "Duplicate login \""+written+"\"",
			"%q is already a login of %s; a login has one credential. A mailbox's addresses are its senders: "+
				"give the mailbox a password_hash instead of a user block.", written, first)
		return false
	}
	owners[u.Login] = "user \"" + u.Login + "\" (" + u.Source + ")"
	return true
}

// passwordHash validates a hash (policy/passhash) and reports why one is
// refused at rng.
func (l *loader) passwordHash(v string, rng hcl.Range) string {
	if _, err := passhash.Parse(v); err != nil {
		msg := err.Error()
		l.errorf(rng, "Invalid password_hash", "%s%s.", strings.ToUpper(msg[:1]), msg[1:])
		return ""
	}
	return v
}

// sender checks one allowed sender: an address or "@domain".
func (l *loader) sender(v string, rng hcl.Range) (string, bool) {
	if dom, ok := strings.CutPrefix(v, "@"); ok && !strings.Contains(dom, ":") {
		d, err := normalizeDomain(dom)
		if err != nil {
			l.errorf(rng, "Invalid sender", "%q: a sender is an address or \"@domain\" (any address at that domain): %v.", v, err)
			return "", false
		}
		return "@" + d, true
	}
	return l.address(v, rng, "Invalid sender")
}

// defaultSenders is senders' default: the login, when it is an address.
func (l *loader) defaultSenders(login string, rng hcl.Range) []string {
	if strings.Contains(login, "@") {
		return []string{login}
	}
	l.errorf(rng, "Missing senders",
		"Login %q is not an address, so it has no sender by default; give it senders = [\"address\", \"@domain\"].", login)
	return nil
}

// readUsersFile reads hub.users_file: "login:hash[:sender,sender...]" a
// line. Errors point at the file's own line and column.
func (l *loader) readUsersFile(owners loginOwner, p string, rng hcl.Range) {
	before := len(l.diags)
	full := l.existingFile(p, rng, "users_file")
	if len(l.diags) > before {
		return
	}
	l.cfg.Hub.UsersFile = full
	src, err := os.ReadFile(full)
	if err != nil {
		l.errorf(rng, "Unreadable users_file", "%v.", err)
		return
	}
	// In the config hash (an edited users file is a new configuration), but
	// not among the files whose lines diagnostics quote.
	l.hashOnly(full, src)
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		l.usersFileLine(owners, full, n, sc.Text())
	}
	if err := sc.Err(); err != nil {
		l.errorf(rng, "Unreadable users_file", "%v.", err)
	}
}

// usersFileLine parses line n of the users file.
func (l *loader) usersFileLine(owners loginOwner, file string, n int, line string) {
	trimmed := strings.TrimSpace(line)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return
	}
	// field returns the text and range of [start, end) of line, trimmed.
	field := func(start, end int) (string, hcl.Range) {
		raw := line[start:end]
		lead := len(raw) - len(strings.TrimLeft(raw, " \t"))
		v := strings.TrimSpace(raw)
		from := start + lead + 1
		return v, hcl.Range{Filename: file,
			Start: hcl.Pos{Line: n, Column: from},
			End:   hcl.Pos{Line: n, Column: from + len(v)}}
	}
	whole := hcl.Range{Filename: file, Start: hcl.Pos{Line: n, Column: 1}, End: hcl.Pos{Line: n, Column: len(line) + 1}}
	c1 := strings.IndexByte(line, ':')
	if c1 < 0 {
		l.errorf(whole, "Invalid users_file line", "Expected login:hash or login:hash:sender,sender...")
		return
	}
	loginText, loginRange := field(0, c1)
	rest := line[c1+1:]
	hashEnd, sendersStart := len(line), -1
	if c2 := strings.IndexByte(rest, ':'); c2 >= 0 {
		hashEnd, sendersStart = c1+1+c2, c1+1+c2+1
	}
	hashText, hashRange := field(c1+1, hashEnd)
	login, ok := l.login(loginText, loginRange)
	if !ok {
		return
	}
	u := User{Login: login, Source: rangeLine(whole)}
	if !l.claimLogin(owners, u, loginText, loginRange) {
		return
	}
	if hashText == "" {
		l.errorf(hashRange, "Invalid password_hash", "The line has no password hash after the login.")
	} else {
		u.PasswordHash = l.passwordHash(hashText, hashRange)
	}
	if sendersStart < 0 || strings.TrimSpace(line[sendersStart:]) == "" {
		u.Senders = l.defaultSenders(u.Login, loginRange)
	} else {
		start := sendersStart
		for _, part := range strings.Split(line[sendersStart:], ",") {
			v, r := field(start, start+len(part))
			start += len(part) + 1
			if v == "" {
				l.errorf(r, "Invalid sender", "An empty sender between commas.")
				continue
			}
			if s, ok := l.sender(v, r); ok {
				u.Senders = append(u.Senders, s)
			}
		}
	}
	l.cfg.Users = append(l.cfg.Users, u)
}

func (l *loader) buildAuthBackends() {
	dups := newDupCheck("auth_backend")
	for _, s := range l.schema.AuthBackends {
		if !validName(s.Name) {
			l.errorf(s.NameRange, "Invalid auth_backend name",
				"Names start with a letter or digit and use only letters, digits, '.', '_' and '-'; %q does not.", s.Name)
		}
		if dups.seen(l, s.Name, s.Name, s.DefRange) {
			continue
		}
		b := AuthBackend{Name: s.Name, Type: AuthDovecot, Timeout: 5 * time.Second, Service: "smtp"}
		if s.Type != nil && *s.Type != string(AuthDovecot) {
			l.errorf(s.TypeRange, "Invalid auth_backend type", "type must be \"dovecot\" (the only one), not %q.", *s.Type)
		}
		switch {
		case s.Socket == nil:
			l.errorf(s.DefRange, "Missing socket",
				"auth_backend %q needs socket, the path of Dovecot's auth-client socket (e.g. \"/run/dovecot/auth-client\").", s.Name)
		case strings.TrimSpace(*s.Socket) == "":
			l.errorf(s.SocketRange, "Invalid socket", "socket must not be empty.")
		default:
			b.Socket = l.path(*s.Socket, s.SocketRange)
		}
		b.Timeout = l.positiveDuration(s.Timeout, s.TimeoutRange, b.Timeout, "timeout")
		if s.Service != nil {
			if !validName(*s.Service) {
				l.errorf(s.ServiceRange, "Invalid service", "service is a plain name such as \"smtp\", not %q.", *s.Service)
			}
			b.Service = *s.Service
		}
		if s.SendersDomainMatch != nil {
			b.SendersDomainMatch = *s.SendersDomainMatch
		}
		l.cfg.AuthBackends = append(l.cfg.AuthBackends, b)
	}
}

// receiveAuthBackend fills rc.AuthBackend: it must name an auth_backend.
func (l *loader) receiveAuthBackend(s *receiveConnectorSchema, rc *ReceiveConnector) {
	if s.AuthBackend == nil {
		return
	}
	name := *s.AuthBackend
	if l.cfg.AuthBackend(name) == nil {
		known := make([]string, 0, len(l.cfg.AuthBackends))
		for _, b := range l.cfg.AuthBackends {
			known = append(known, "\""+b.Name+"\"")
		}
		if len(known) == 0 {
			known = append(known, "none is defined")
		}
		l.errorf(s.AuthBackendRange, "Unknown auth_backend",
			"Connector %q names auth_backend %q, which is not defined (auth_backend blocks: %s).", rc.Name, name, strings.Join(known, ", "))
		return
	}
	rc.AuthBackend = name
}
