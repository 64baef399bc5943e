// Package dovecotauth is a client of Dovecot's authentication protocol
// (v1.x, the "auth-client" socket: what Postfix's smtpd_sasl_type = dovecot
// and Dovecot's own login processes speak), so that a site running Dovecot
// keeps one password database for IMAP and for submission.
//
// One Authenticate is one connection, which keeps the client free of
// shared state (no request ids to match, no half-broken pooled connection
// to notice); Dovecot's auth service is built for many short clients.
// Exchange, all lines ending in LF, fields separated by TAB:
//
//	C: VERSION 1 2                 (major must match; minor is informative)
//	C: CPID <our pid>
//	S: VERSION 1 <minor>
//	S: MECH PLAIN plaintext        (one line per mechanism; PLAIN must be there)
//	S: SPID, CUID, COOKIE          (ignored: only master clients use them)
//	S: DONE
//	C: AUTH 1 PLAIN service=smtp nologin no-penalty [secured] [lip=..] [rip=..] resp=<base64>
//	S: OK 1 user=<name> ...        → the login Dovecot vouches for
//	S: FAIL 1 [temp] [reason=..]   → refused; with "temp": Dovecot could not decide
//
// resp is the RFC 4616 PLAIN message (an empty authorization identity, the
// login, the password), whatever mechanism the SMTP client used: hubd
// terminates SASL itself and asks Dovecot only to check the pair. "nologin"
// says no login process follows (we only check credentials); "no-penalty"
// turns off Dovecot's own per-address delay, since hubd counts failures
// and tarpits them itself (connectors' brute-force defence) and Dovecot's
// delay would otherwise run into our timeout. Values in replies use
// Dovecot's tab-escaping (\001 then 0, 1, t, r, n or l), which Parse undoes.
//
// Errors: a FAIL without "temp" is ErrRefused; everything else that keeps
// an answer from arriving — no socket, a timeout, a version mismatch, no
// PLAIN, a reply that does not parse, FAIL with "temp" — is an
// *UnavailableError, which SMTP turns into 454 4.7.0 (RFC 4954 §6).
package dovecotauth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrRefused is Dovecot's FAIL: the credentials are not valid.
var ErrRefused = errors.New("dovecotauth: credentials refused")

// UnavailableError says Dovecot gave no verdict: the check may succeed
// later.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "dovecotauth: unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Client checks credentials against one Dovecot auth-client socket.
type Client struct {
	Socket  string        // unix socket path
	Timeout time.Duration // for the whole exchange; 0 means 5s
	Service string        // service= (Dovecot passdb rules may match on it); "" means "smtp"
}

// Request is one credential check.
type Request struct {
	Login, Password string
	// Secured tells Dovecot the client's channel is protected (TLS), which
	// its disable_plaintext_auth setting asks for.
	Secured bool
	// LocalIP and RemoteIP, when valid, go to Dovecot as lip and rip for
	// its logs and passdb rules.
	LocalIP, RemoteIP netip.Addr
}

// maxLine bounds a line from Dovecot (the protocol expects 16 KiB).
const maxLine = 16 << 10

// Authenticate asks Dovecot whether r's login and password are valid and
// returns the user name it vouches for (OK's user=, or the login when it
// gives none). The error is ErrRefused or an *UnavailableError.
func (c *Client) Authenticate(ctx context.Context, r Request) (string, error) {
	if strings.ContainsRune(r.Login, 0) || strings.ContainsRune(r.Password, 0) {
		return "", ErrRefused // cannot be said in PLAIN; never a valid login
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return "", &UnavailableError{err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// A cancelled ctx (the SMTP session ended) ends the exchange too.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	user, err := c.exchange(conn, r)
	if err != nil && !errors.Is(err, ErrRefused) {
		var ue *UnavailableError
		if !errors.As(err, &ue) {
			err = &UnavailableError{err}
		}
	}
	return user, err
}

func (c *Client) exchange(conn net.Conn, r Request) (string, error) {
	if _, err := fmt.Fprintf(conn, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		return "", err
	}
	br := bufio.NewReaderSize(conn, 4096)
	if err := readHandshake(br); err != nil {
		return "", err
	}
	service := c.Service
	if service == "" {
		service = "smtp"
	}
	var b strings.Builder
	b.WriteString("AUTH\t1\tPLAIN\tservice=" + escape(service) + "\tnologin\tno-penalty")
	if r.Secured {
		b.WriteString("\tsecured")
	}
	if r.LocalIP.IsValid() {
		b.WriteString("\tlip=" + r.LocalIP.Unmap().String())
	}
	if r.RemoteIP.IsValid() {
		b.WriteString("\trip=" + r.RemoteIP.Unmap().String())
	}
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + r.Login + "\x00" + r.Password))
	b.WriteString("\tresp=" + resp + "\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := readLine(br)
	if err != nil {
		return "", err
	}
	return parseReply(line, r.Login)
}

// readHandshake reads the server's handshake up to DONE and checks the
// version and that PLAIN is offered.
func readHandshake(br *bufio.Reader) error {
	sawVersion, plain := false, false
	for {
		line, err := readLine(br)
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		f := strings.Split(line, "\t")
		switch f[0] {
		case "VERSION":
			if len(f) < 3 || f[1] != "1" {
				return fmt.Errorf("handshake: unsupported protocol %q (want major version 1)", line)
			}
			sawVersion = true
		case "MECH":
			if len(f) >= 2 && strings.EqualFold(f[1], "PLAIN") {
				plain = true
			}
		case "DONE":
			switch {
			case !sawVersion:
				return errors.New("handshake: no VERSION before DONE")
			case !plain:
				return errors.New("handshake: Dovecot does not offer PLAIN (auth_mechanisms)")
			}
			return nil
		}
	}
}

// readLine reads one LF-terminated line of at most maxLine bytes.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, chunk...)
		if len(b) > maxLine {
			return "", errors.New("line too long")
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}

// parseReply reads the answer to AUTH id 1.
func parseReply(line, login string) (string, error) {
	f := strings.Split(line, "\t")
	if len(f) < 2 || f[1] != "1" {
		return "", fmt.Errorf("unexpected reply %q", truncate(line))
	}
	params := map[string]string{}
	for _, p := range f[2:] {
		k, v, _ := strings.Cut(p, "=")
		params[k] = unescape(v)
	}
	switch f[0] {
	case "OK":
		if u := params["user"]; u != "" {
			return u, nil
		}
		return login, nil
	case "FAIL":
		if _, temp := params["temp"]; temp {
			reason := params["reason"]
			if reason == "" {
				reason = "temporary failure"
			}
			return "", &UnavailableError{errors.New("Dovecot: " + reason)}
		}
		return "", ErrRefused
	case "CONT":
		// PLAIN with an initial response needs no continuation.
		return "", errors.New("unexpected CONT to PLAIN with an initial response")
	}
	return "", fmt.Errorf("unexpected reply %q", truncate(line))
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// escape applies Dovecot's tab-escaping to a value we send.
func escape(s string) string {
	r := strings.NewReplacer("\x01", "\x011", "\x00", "\x010", "\t", "\x01t", "\r", "\x01r", "\n", "\x01n")
	return r.Replace(s)
}

// unescape undoes Dovecot's tab-escaping: \001 followed by 0 (NUL), 1
// (\001), t (TAB), r (CR), n or l (LF); before anything else \001 is
// dropped and the character kept.
func unescape(s string) string {
	if !strings.Contains(s, "\x01") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != 1 || i+1 == len(s) {
			if s[i] != 1 {
				b.WriteByte(s[i])
			}
			continue
		}
		i++
		switch s[i] {
		case '0':
			b.WriteByte(0)
		case '1':
			b.WriteByte(1)
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'n', 'l':
			b.WriteByte('\n')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// String names the client in logs.
func (c *Client) String() string { return "dovecot auth " + strconv.Quote(c.Socket) }
