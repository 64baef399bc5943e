package sendmail

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hubd/internal/maildrop"
	"hubd/policy"
)

// runSendmail is sendmail proper: -bm (the default), -bs, or a redirect to
// mailq or newaliases.
func runSendmail(args []string, std IO) error {
	o, err := parseArgs(args)
	if err != nil {
		return err
	}
	switch o.mode {
	case "p":
		return mailq(o, std)
	case "i":
		return newaliases(o, std)
	}
	cfg, err := policy.LoadDropIn(configPath(o.config, std))
	if err != nil {
		return fail(ExConfig, "cannot read the configuration: %v", err)
	}
	inv, err := invoker(cfg.Hostname)
	if err != nil {
		return err
	}
	if o.mode == "s" {
		return serveSMTP(cfg, inv, std)
	}
	sender := inv.address
	if o.from != nil {
		if sender, err = envelopeAddress(*o.from, cfg.Hostname, true); err != nil {
			return fail(ExNoUser, "sender %q: %v", *o.from, err)
		}
	}
	var rcpts []string
	for _, a := range o.recipients {
		list, err := parseAddressList(a, cfg.Hostname)
		if err != nil {
			return fail(ExNoUser, "recipient %q: %v", a, err)
		}
		rcpts = append(rcpts, list...)
	}
	if len(rcpts) == 0 && !o.extract {
		return fail(ExDataErr, "no recipients specified (give them as arguments, or use -t to read them from the message)")
	}
	env := maildrop.Envelope{From: sender, Ret: o.ret, EnvID: o.envID, Body: o.body, UID: inv.uid, User: inv.login, Time: time.Now()}
	msg := &composer{in: newLineReader(std.Stdin, !o.ignoreDots), extract: o.extract, hostname: cfg.Hostname,
		from: fromField(sender, inv, o.fullName)}
	id, err := msg.drop(cfg.MaildropDir, env, rcpts, o.notify)
	if err != nil {
		return err
	}
	_ = id
	return nil
}

// invocation is who runs sendmail.
type invocation struct {
	uid      int
	login    string
	fullName string // GECOS
	address  string // login@hostname, the default sender
}

// invoker looks up the real uid (setgid leaves it alone): the default sender
// is that login at hub.hostname.
func invoker(hostname string) (invocation, error) {
	uid := os.Getuid()
	inv := invocation{uid: uid, login: "uid" + strconv.Itoa(uid)}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		inv.login = u.Username
		inv.fullName, _, _ = strings.Cut(u.Name, ",")
	}
	inv.address = inv.login + "@" + hostname
	if _, _, err := policy.SplitAddress(inv.address); err != nil {
		return inv, fail(ExNoUser, "your login %q makes no valid sender address (%v); give one with -f", inv.login, err)
	}
	return inv, nil
}

// dropError maps a failure to write the maildrop to 73 or 75.
func dropError(dir string, err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist), errors.As(err, &errno) && (errno == syscall.EROFS || errno == syscall.ENOTDIR):
		return fail(ExCantCreat, "cannot write to the maildrop %s: %v (is hubd installed, and sendmail setgid to the maildrop group?)", dir, errors.Unwrap(err))
	default:
		return fail(ExTempFail, "cannot write to the maildrop %s: %v; try again later", dir, err)
	}
}

// lineReader yields the input's lines without their line ending (LF or
// CRLF; a CR elsewhere is dropped, since the maildrop holds strict CRLF and
// a bare CR would be refused by the pickup). With dotEnds, a line holding a
// single "." ends the input (sendmail without -i).
type lineReader struct {
	br      *bufio.Reader
	dotEnds bool
	done    bool
}

func newLineReader(r io.Reader, dotEnds bool) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), dotEnds: dotEnds}
}

// next returns the next line; io.EOF at the end.
func (l *lineReader) next() ([]byte, error) {
	if l.done {
		return nil, io.EOF
	}
	line, err := l.br.ReadBytes('\n')
	if err == io.EOF && len(line) == 0 {
		l.done = true
		return nil, io.EOF
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	line = dropCR(line[:len(line)-countLF(line)])
	if l.dotEnds && len(line) == 1 && line[0] == '.' {
		l.done = true
		return nil, io.EOF
	}
	return line, nil
}

func countLF(line []byte) int {
	if len(line) > 0 && line[len(line)-1] == '\n' {
		return 1
	}
	return 0
}

// dropCR removes every CR (the one before LF, and bare ones).
func dropCR(b []byte) []byte {
	if !strings.Contains(string(b), "\r") {
		return b
	}
	out := b[:0]
	for _, c := range b {
		if c != '\r' {
			out = append(out, c)
		}
	}
	return out
}
