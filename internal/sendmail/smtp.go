package sendmail

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"hubd/internal/maildrop"
	"hubd/policy"
)

// serveSMTP is sendmail -bs: one SMTP session (RFC 5321) on stdin and
// stdout, as inetd-style callers and some MUAs use it. Each message goes
// into the maildrop, as with -bm; the 250 after DATA comes only once its
// file is durable. The replies are ours, with enhanced status codes
// (RFC 3463); the session offers 8BITMIME, DSN and ENHANCEDSTATUSCODES.
// Postfix answers -bs as the invoking user without authentication; so do
// we: the envelope sender is what MAIL FROM says.
func serveSMTP(cfg policy.DropIn, inv invocation, std IO) error {
	s := &smtpSession{cfg: cfg, inv: inv, in: bufio.NewReaderSize(std.Stdin, 64<<10), out: bufio.NewWriter(std.Stdout)}
	s.reply(220, "", cfg.Hostname+" ESMTP hubd (sendmail -bs)")
	for {
		line, err := s.readLine()
		if err != nil {
			return nil // the client went away: nothing half-done is kept
		}
		verb, arg, _ := strings.Cut(line, " ")
		if s.command(strings.ToUpper(verb), strings.TrimSpace(arg)) {
			return nil
		}
	}
}

type smtpSession struct {
	cfg   policy.DropIn
	inv   invocation
	in    *bufio.Reader
	out   *bufio.Writer
	mail  bool
	env   maildrop.Envelope
	rcpts []maildrop.Recipient
}

// command runs one command; true ends the session.
func (s *smtpSession) command(verb, arg string) bool {
	switch verb {
	case "HELO":
		s.reset()
		s.reply(250, "", s.cfg.Hostname)
	case "EHLO":
		s.reset()
		s.replyLines(250, s.cfg.Hostname, "8BITMIME", "DSN", "ENHANCEDSTATUSCODES")
	case "MAIL":
		s.mailFrom(arg)
	case "RCPT":
		s.rcptTo(arg)
	case "DATA":
		s.data()
	case "RSET":
		s.reset()
		s.reply(250, "2.0.0", "Ok")
	case "NOOP":
		s.reply(250, "2.0.0", "Ok")
	case "VRFY":
		s.reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
	case "HELP":
		s.reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT")
	case "QUIT":
		s.reply(221, "2.0.0", "Bye")
		return true
	default:
		s.reply(502, "5.5.2", "Error: command not recognized")
	}
	return false
}

func (s *smtpSession) reset() {
	s.mail, s.env, s.rcpts = false, maildrop.Envelope{}, nil
}

func (s *smtpSession) mailFrom(arg string) {
	if s.mail {
		s.reply(503, "5.5.1", "Error: nested MAIL command")
		return
	}
	path, params, ok := pathArg(arg, "FROM:")
	if !ok {
		s.reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
		return
	}
	from, err := envelopeAddress(path, s.cfg.Hostname, true)
	if err != nil {
		s.reply(553, "5.1.7", fmt.Sprintf("Bad sender address syntax: %v", err))
		return
	}
	env := maildrop.Envelope{From: from, UID: s.inv.uid, User: s.inv.login, Time: time.Now()}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "BODY":
			env.Body = strings.ToUpper(v)
			if env.Body != "7BIT" && env.Body != "8BITMIME" {
				s.reply(501, "5.5.4", "Bad BODY parameter")
				return
			}
		case "RET":
			env.Ret = strings.ToUpper(v)
			if env.Ret != "FULL" && env.Ret != "HDRS" {
				s.reply(501, "5.5.4", "Bad RET parameter")
				return
			}
		case "ENVID":
			env.EnvID = v
		case "SIZE":
		default:
			s.reply(555, "5.5.4", fmt.Sprintf("Unsupported option: %s", k))
			return
		}
	}
	s.mail, s.env = true, env
	s.reply(250, "2.1.0", "Ok")
}

func (s *smtpSession) rcptTo(arg string) {
	if !s.mail {
		s.reply(503, "5.5.1", "Error: need MAIL command")
		return
	}
	path, params, ok := pathArg(arg, "TO:")
	if !ok {
		s.reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
		return
	}
	addr, err := envelopeAddress(path, s.cfg.Hostname, false)
	if err != nil {
		s.reply(553, "5.1.3", fmt.Sprintf("Bad recipient address syntax: %v", err))
		return
	}
	r := maildrop.Recipient{Address: addr}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "NOTIFY":
			n, err := parseNotify(v)
			if err != nil {
				s.reply(501, "5.5.4", "Bad NOTIFY parameter: "+err.Error())
				return
			}
			r.Notify = n
		case "ORCPT":
		default:
			s.reply(555, "5.5.4", fmt.Sprintf("Unsupported option: %s", k))
			return
		}
	}
	s.rcpts = append(s.rcpts, r)
	s.reply(250, "2.1.5", "Ok")
}

func (s *smtpSession) data() {
	if len(s.rcpts) == 0 {
		s.reply(503, "5.5.1", "Error: need RCPT command")
		return
	}
	s.reply(354, "", "End data with <CR><LF>.<CR><LF>")
	dr := &dotReader{in: s.in}
	c := &composer{in: newLineReader(dr, false), hostname: s.cfg.Hostname,
		from: fromField(s.env.From, s.inv, "")}
	s.env.Recipients = s.rcpts
	id, err := c.dropEnvelope(s.cfg.MaildropDir, s.env)
	io.Copy(io.Discard, dr) // stay in step after a refused message
	s.reset()
	var e *exitError
	switch {
	case err == nil:
		s.reply(250, "2.0.0", "Ok: queued as "+id)
	case errors.As(err, &e) && (e.code == ExDataErr || e.code == ExNoUser):
		s.reply(554, "5.6.0", "Message refused: "+e.msg)
	case errors.As(err, &e) && e.code == ExTempFail:
		s.reply(452, "4.3.1", "Insufficient system storage: "+e.msg)
	default:
		s.reply(451, "4.3.0", "Local error: "+err.Error())
	}
}

// pathArg splits "FROM:<a@b> K=V ..." into the path and its parameters.
func pathArg(arg, prefix string) (string, []string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", nil, false
	}
	fields := strings.Fields(strings.TrimSpace(arg[len(prefix):]))
	if len(fields) == 0 || !strings.HasPrefix(fields[0], "<") || !strings.HasSuffix(fields[0], ">") {
		return "", nil, false
	}
	return fields[0], fields[1:], true
}

func (s *smtpSession) readLine() (string, error) {
	line, err := s.in.ReadString('\n')
	if err != nil && (err != io.EOF || line == "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (s *smtpSession) reply(code int, enhanced, text string) {
	if enhanced != "" {
		text = enhanced + " " + text
	}
	fmt.Fprintf(s.out, "%d %s\r\n", code, text)
	s.out.Flush()
}

// replyLines is a multi-line reply (EHLO): the text, then each keyword.
func (s *smtpSession) replyLines(code int, lines ...string) {
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(s.out, "%d%s%s\r\n", code, sep, l)
	}
	s.out.Flush()
}

// dotReader yields the DATA content up to the line with a single ".",
// dot-unstuffed (RFC 5321 §4.5.2), with LF line endings.
type dotReader struct {
	in   *bufio.Reader
	buf  []byte
	done bool
}

func (d *dotReader) Read(p []byte) (int, error) {
	for len(d.buf) == 0 {
		if d.done {
			return 0, io.EOF
		}
		line, err := d.in.ReadString('\n')
		if err != nil && line == "" {
			d.done = true
			return 0, io.ErrUnexpectedEOF
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "." {
			d.done = true
			return 0, io.EOF
		}
		line = strings.TrimPrefix(line, ".")
		d.buf = append(d.buf, line...)
		d.buf = append(d.buf, '\n')
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}
