// Package sendmail is hubd's sendmail(1), mailq(1) and newaliases(1): the
// command-line door into the hub that cron, PHP's mail(), mail(1) and every
// "/usr/sbin/sendmail -t -i" caller use. cmd/sendmail and `hubd sendmail`
// both run Main; invoked under the name mailq it acts as mailq, under
// newaliases as newaliases (as Postfix's sendmail does).
//
// # What it does
//
// sendmail reads one message on standard input and writes it, with its
// envelope, to the maildrop (internal/maildrop); hubd's pickup queues it.
// It talks to no daemon, so it works while hubd is down, and exits 0 only
// once the maildrop file is durable. It supports the Postfix sendmail(1)
// subset below; other legacy options are accepted and ignored.
//
//	-t            recipients also from To:, Cc:, Bcc: (Resent-To/Cc/Bcc instead
//	              when the message has Resent- fields, RFC 5322 §3.6.6); as with
//	              Postfix ≥ 2.1 they are added to the recipients given as
//	              arguments. Bcc: and Resent-Bcc: are removed from the message.
//	-i, -oi       a line with a single "." does not end the input. Without it,
//	              such a line ends the message, as sendmail(8) does.
//	-f, -r ADDR   the envelope sender; "<>" or "" is the null sender; a bare
//	              name gets "@" hub.hostname. Default: login@hub.hostname.
//	-F NAME       the full name for a From: field added when the message has none
//	              (default: the user's GECOS name).
//	-N DSN        RFC 3461 NOTIFY for every recipient: never, or a comma list of
//	              success, failure, delay.
//	-R RET        RFC 3461 RET: full or hdrs.     -V ENVID  RFC 3461 ENVID.
//	-B TYPE       the body type: 8BITMIME or 7BIT.
//	-C PATH       the configuration (else $HUBD_CONFIG, else /etc/hubd/hubd.hcl).
//	-bm           deliver mail (the default).   -bs  an SMTP session on stdin/stdout.
//	-bp           list the queue (mailq).       -bi, -I  newaliases.
//	--            the end of the options.
//	ignored:      -o* (but -oi), -h N, -v, -e*, -L x, -O x, -X x, -G, -U, -n, -m, -c, -x
//
// Bare names as recipients (root, "www-data") get "@" hub.hostname, as
// Postfix appends $myorigin.
//
// # The configuration
//
// sendmail runs as any user, with the drop group's rights only, so it cannot
// load the whole configuration (TLS keys and recipient files may be readable
// by hubd alone). It reads just the hub block (hostname, spool_dir,
// maildrop_dir) and the admin socket with policy.LoadDropIn. newaliases
// is the exception: checking the aliases means loading everything
// (newaliases.go).
//
// # Exit status (sysexits.h)
//
//	0  EX_OK         the message is in the maildrop (durable)
//	64 EX_USAGE      a bad option
//	65 EX_DATAERR    no recipients; a broken header section
//	67 EX_NOUSER     a malformed address (sender or recipient)
//	69 EX_UNAVAILABLE  mailq: hubd's admin API cannot be reached; newaliases: it
//	                 answered with an error
//	73 EX_CANTCREAT  the maildrop cannot be written (missing, no permission)
//	75 EX_TEMPFAIL   the maildrop is full or failed to sync; try again later
//	77 EX_NOPERM     newaliases: no permission on the configuration or the admin socket
//	78 EX_CONFIG     the configuration cannot be read; newaliases: it has errors,
//	                 or the running hubd refused it
//
// Every failure prints one line on standard error naming the cause (newaliases
// prints the diagnostics before it), and
// leaves nothing in the maildrop.
package sendmail

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Exit codes from sysexits.h.
const (
	ExOK          = 0
	ExUsage       = 64
	ExDataErr     = 65
	ExNoUser      = 67
	ExUnavailable = 69
	ExSoftware    = 70
	ExCantCreat   = 73
	ExTempFail    = 75
	ExNoPerm      = 77
	ExConfig      = 78
)

// DefaultConfig is where the configuration is when neither -C nor
// HUBD_CONFIG says otherwise.
const DefaultConfig = "/etc/hubd/hubd.hcl"

// IO is the command's standard streams and environment.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string // nil → os.Getenv
}

// exitError is a failure with its exit code; its message goes to stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func fail(code int, format string, args ...any) *exitError {
	return &exitError{code, fmt.Sprintf(format, args...)}
}

// Main runs sendmail (or mailq, or newaliases, by the name in argv0) and
// returns the exit status.
func Main(argv0 string, args []string, std IO) int {
	if std.Getenv == nil {
		std.Getenv = os.Getenv
	}
	name := filepath.Base(argv0)
	var err error
	switch name {
	case "mailq":
		err = runMailq(args, std)
	case "newaliases":
		err = runNewaliases(args, std)
	default:
		name = "sendmail"
		err = runSendmail(args, std)
	}
	if err == nil {
		return ExOK
	}
	code := ExSoftware
	if e, ok := err.(*exitError); ok {
		code = e.code
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(std.Stderr, "%s: %s\n", name, msg)
	}
	return code
}

// configPath is -C, else $HUBD_CONFIG, else DefaultConfig.
func configPath(flag string, std IO) string {
	if flag != "" {
		return flag
	}
	if p := std.Getenv("HUBD_CONFIG"); p != "" {
		return p
	}
	return DefaultConfig
}

// options are sendmail's parsed command line.
type options struct {
	mode       string // "m" (deliver), "s", "p", "i"
	extract    bool   // -t
	ignoreDots bool   // -i, -oi
	from       *string
	fullName   string
	notify     []string
	ret        string
	envID      string
	body       string
	config     string
	json       bool // mailq --json
	recipients []string
}

// withArg are the options that take an argument (in the same word or the
// next), as Postfix's sendmail parses them.
const withArg = "BCFLNORVXbefhopqr"

// ignoredFlags take no argument and do nothing here.
const ignoredFlags = "GUcmnvx"

func parseArgs(args []string) (*options, error) {
	o := &options{mode: "m"}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		if a == "--json" {
			o.json = true
			continue
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			switch {
			case c == 't':
				o.extract = true
			case c == 'i':
				o.ignoreDots = true
			case c == 'I':
				o.mode = "i"
			case strings.IndexByte(ignoredFlags, c) >= 0:
			case strings.IndexByte(withArg, c) >= 0:
				val := a[j+1:]
				if val == "" && c != 'q' {
					if i+1 >= len(args) {
						return nil, fail(ExUsage, "option -%c requires an argument", c)
					}
					i++
					val = args[i]
				}
				if err := o.set(c, val); err != nil {
					return nil, err
				}
				j = len(a)
			default:
				return nil, fail(ExUsage, "unknown option -%c (see sendmail(1): -t -i -f -F -N -R -V -B -C -bs -bp -bi)", c)
			}
		}
	}
	o.recipients = args[i:]
	return o, nil
}

// set applies one option with its argument.
func (o *options) set(c byte, val string) error {
	switch c {
	case 'f', 'r':
		o.from = &val
	case 'F':
		o.fullName = val
	case 'C':
		o.config = val
	case 'o':
		if val == "i" {
			o.ignoreDots = true
		}
	case 'b':
		switch val {
		case "m", "s", "p", "i":
			o.mode = val
		default:
			return fail(ExUsage, "-b%s is not supported (supported: -bm, -bs, -bp, -bi)", val)
		}
	case 'B':
		switch strings.ToUpper(val) {
		case "8BITMIME", "7BIT":
			o.body = strings.ToUpper(val)
		default:
			return fail(ExUsage, "-B %s: the body type must be 8BITMIME or 7BIT", val)
		}
	case 'N':
		n, err := parseNotify(val)
		if err != nil {
			return fail(ExUsage, "-N %s: %v", val, err)
		}
		o.notify = n
	case 'R':
		switch strings.ToUpper(val) {
		case "FULL", "HDRS":
			o.ret = strings.ToUpper(val)
		default:
			return fail(ExUsage, "-R %s: must be full or hdrs", val)
		}
	case 'V':
		if !validXtext(val) {
			return fail(ExUsage, "-V %s: an envelope id is 1 to 100 printable ASCII characters", val)
		}
		o.envID = val
	case 'q':
		return fail(ExUsage, "-q is not supported; use hubctl queue retry")
	}
	// -e*, -h, -L, -O, -X: accepted and ignored.
	return nil
}

// parseNotify parses -N: "never", or a comma list of success, failure,
// delay (RFC 3461 §4.1), case-insensitive.
func parseNotify(v string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(v, ",") {
		f = strings.ToUpper(strings.TrimSpace(f))
		switch f {
		case "NEVER":
			if len(strings.Split(v, ",")) != 1 {
				return nil, fmt.Errorf("never cannot be combined")
			}
		case "SUCCESS", "FAILURE", "DELAY":
		default:
			return nil, fmt.Errorf("%q is not never, success, failure or delay", f)
		}
		out = append(out, f)
	}
	return out, nil
}

// validXtext: RFC 3461 §4.4 limits ENVID to 100 characters of printable
// ASCII (we encode nothing: "+" and "=" are refused rather than guessed at).
func validXtext(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '!' || s[i] > '~' || s[i] == '+' || s[i] == '=' {
			return false
		}
	}
	return true
}
