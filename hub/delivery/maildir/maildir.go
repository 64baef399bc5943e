// Package maildir delivers messages into local mailboxes in the Maildir
// format (https://cr.yp.to/proto/maildir.html), the final hop for
// recipients whose mailbox lives on this hub.
//
// What it promises, per recipient:
//
//   - Durable before Delivered. The message is written to a fresh file in
//     tmp/ (<name> plus a random suffix, so overlapping attempts for one key
//     never share a file), the file is fsynced, hard-linked (or renamed) to
//     new/<name>, and the new/ directory is fsynced; only then is the
//     recipient Delivered. A crash at any point leaves either no message in
//     new/ or a complete one.
//   - Idempotent per Recipient.Key. The file name is
//     "<arrival unix seconds>.<key>.<hostname>", the same on every attempt, so
//     an attempt that finds new/<name>, cur/<name> or cur/<name>:2,<flags>
//     (the MUA has already seen it) reports Delivered without a second copy.
//     Link, unlike rename, refuses to replace an existing new/<name>, so two
//     racing attempts for one key also leave one file. The hostname is not
//     part of the identity: hub.hostname may change between a crash and the
//     retry (a restart with a new configuration), so a message that may
//     predate this process is also found under any hostname: any name in
//     new/ or cur/ that starts with "<arrival>.<key>." counts. That is exact
//     because no key is another key followed by "." (the transport's keys
//     are "<queue id>.<16 hex digits>", and queue ids have no dot).
//   - The stored file starts with "Return-Path: <from>" (RFC 5321 §4.4: the
//     final delivery MTA records the reverse-path) and "Delivered-To: <addr>"
//     (RFC 9228), in the order Postfix and Dovecot write them, followed by the
//     queued message with CRLF converted to LF: Maildir files use the local
//     line ending, as Dovecot and mutt expect. A lone CR is kept.
//   - Missing <maildir>, tmp/, new/ and cur/ are created with mode 0700.
//
// Outcomes: an empty Recipient.Maildir is Failed 550 5.1.1 (no mailbox to
// deliver to); any file-system error (ENOSPC, EIO, EACCES, ...) is Deferred
// 451 4.3.0 with the error in the text, and the tmp file is removed; a
// cancelled ctx is Deferred 451 4.4.2.
package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hubd/hub/delivery"
	"hubd/internal/durable"
)

// Options configure the Maildir deliverer.
type Options struct {
	Logger *slog.Logger // nil → discard
	// Hostname is the last part of every file name; default os.Hostname().
	Hostname string
}

// New returns the Maildir deliverer.
func New(opts Options) delivery.Deliverer {
	d := &deliverer{log: opts.Logger, host: opts.Hostname, started: time.Now()}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.host == "" {
		d.host, _ = os.Hostname()
		if d.host == "" {
			d.host = "localhost"
		}
	}
	d.host = sanitizeName(d.host)
	return d
}

type deliverer struct {
	log     *slog.Logger
	host    string    // already sanitised for a file name
	started time.Time // messages received before this may predate a crash
}

// Deliver writes the message once per recipient, each into its own Maildir.
func (d *deliverer) Deliver(ctx context.Context, _ delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	out := make([]delivery.Result, len(rcpts))
	for i, r := range rcpts {
		out[i] = d.deliverOne(ctx, msg, r)
		d.log.LogAttrs(ctx, out[i].Status.LogLevel(), "maildir delivery",
			slog.String("queue_id", string(msg.ID)), slog.String("key", r.Key),
			slog.String("status", out[i].Status.String()), slog.String("reply", out[i].String()))
	}
	return out
}

func (d *deliverer) deliverOne(ctx context.Context, msg delivery.Message, r delivery.Recipient) delivery.Result {
	if r.Maildir == "" {
		return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.1.1",
			Text: "no Maildir configured for " + r.Address}
	}
	if err := ctx.Err(); err != nil {
		return deferred(451, "4.4.2", "delivery abandoned: "+err.Error())
	}
	name := d.fileName(msg, r.Key)
	// A copy delivered before a crash may since have been moved by a mail
	// reader from new/ to cur/ and renamed "<name>:2,<flags>", or have been
	// written under another hostname (hub.hostname changed at the restart);
	// finding those takes a scan of new/ and cur/, which only messages that
	// may predate this process (and so a crash) pay for.
	maybeBeforeCrash := msg.Envelope == nil || msg.Envelope.ReceivedAt.Before(d.started)
	found, err := alreadyDelivered(r.Maildir, name, d.identity(msg, r.Key), maybeBeforeCrash)
	if err != nil {
		return deferred(451, "4.3.0", "maildir: "+err.Error())
	}
	if found != "" {
		// The earlier attempt may have died between the link and the
		// directory fsync: make the entry durable before saying so.
		if err := durable.SyncDir(found); err != nil {
			return deferred(451, "4.3.0", "maildir: "+err.Error())
		}
		return delivered(name, "already delivered")
	}
	if err := ensureDirs(r.Maildir); err != nil {
		return deferred(451, "4.3.0", "maildir: "+err.Error())
	}
	if err := writeMessage(ctx, r.Maildir, name, header(msg, r), msg); err != nil {
		if ctx.Err() != nil {
			return deferred(451, "4.4.2", "delivery abandoned: "+err.Error())
		}
		return deferred(451, "4.3.0", "maildir: "+err.Error())
	}
	return delivered(name, "delivered")
}

// fileName is "<arrival unix seconds>.<key>.<hostname>": unique per
// recipient (the key is) and per host sharing the Maildir, stable across
// attempts, and sorted by arrival as the spec's time prefix intends.
func (d *deliverer) fileName(msg delivery.Message, key string) string {
	return d.identity(msg, key) + d.host
}

// identity is the host-independent start of the file name,
// "<arrival unix seconds>.<key>.": what tells one recipient's copy from
// another's, whatever hostname wrote it.
func (d *deliverer) identity(msg delivery.Message, key string) string {
	var secs int64
	if msg.Envelope != nil && !msg.Envelope.ReceivedAt.IsZero() {
		secs = msg.Envelope.ReceivedAt.Unix()
	}
	return strconv.FormatInt(secs, 10) + "." + sanitizeName(key) + "."
}

// sanitizeName replaces the characters a Maildir name may not contain:
// '/' (a path separator) and ':' (starts the info suffix in cur/). The
// Maildir spec encodes them as octal escapes "\057" and "\072"; '\' itself
// is escaped too so the encoding stays unambiguous.
func sanitizeName(s string) string {
	if !strings.ContainsAny(s, "/:\\\x00") {
		return s
	}
	var b strings.Builder
	for _, c := range []byte(s) {
		switch c {
		case '/', ':', '\\', 0:
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// header is the trace the final delivery MTA prepends, LF-terminated.
func header(msg delivery.Message, r delivery.Recipient) string {
	from := ""
	if msg.Envelope != nil {
		from = msg.Envelope.From
	}
	// The envelope was validated at RCPT/MAIL time; dropping control
	// characters here only guarantees that no address can inject a header.
	return "Return-Path: <" + stripControls(from) + ">\n" +
		"Delivered-To: " + stripControls(r.Address) + "\n"
}

func stripControls(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// alreadyDelivered returns the directory (new/ or cur/) holding name or,
// with scan, any entry starting with identity (name under another
// hostname, or renamed "name:2,<flags>" by a mail reader); "" when there is
// none. A missing Maildir is "none".
func alreadyDelivered(dir, name, identity string, scan bool) (string, error) {
	for _, sub := range []string{"new", "cur"} {
		if _, err := os.Lstat(filepath.Join(dir, sub, name)); err == nil {
			return filepath.Join(dir, sub), nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
	}
	if !scan {
		return "", nil
	}
	for _, sub := range []string{"new", "cur"} {
		if found, err := hasPrefixEntry(filepath.Join(dir, sub), identity); found || err != nil {
			return filepath.Join(dir, sub), err
		}
	}
	return "", nil
}

// hasPrefixEntry reports whether directory dir has an entry whose name
// starts with prefix; a missing directory has none.
func hasPrefixEntry(dir, prefix string) (bool, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	for {
		names, err := f.Readdirnames(1024)
		for _, n := range names {
			if strings.HasPrefix(n, prefix) {
				return true, nil
			}
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// ensureDirs creates <dir>/{tmp,new,cur} (0700) when missing, and fsyncs
// each directory whose entries it changed so that the new directories survive
// a crash along with the message linked into them.
func ensureDirs(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "tmp")); err == nil {
			return nil
		}
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return err
	}
	created, err := mkdir(dir)
	if err != nil {
		return err
	}
	if created {
		if err := durable.SyncDir(parent); err != nil {
			return err
		}
	}
	changed := false
	for _, sub := range []string{"tmp", "new", "cur"} {
		c, err := mkdir(filepath.Join(dir, sub))
		if err != nil {
			return err
		}
		changed = changed || c
	}
	if changed {
		return durable.SyncDir(dir)
	}
	return nil
}

// mkdir creates one directory, reporting whether it did; an existing
// directory (including one a concurrent delivery just made) is not an error.
func mkdir(p string) (bool, error) {
	err := os.Mkdir(p, 0o700)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrExist) {
		if fi, serr := os.Stat(p); serr == nil && fi.IsDir() {
			return false, nil
		}
	}
	return false, err
}

func delivered(name, what string) delivery.Result {
	return delivery.Result{Status: delivery.Delivered, Code: 250, Enhanced: "2.0.0", Text: what + " as " + name}
}

func deferred(code int, enhanced, text string) delivery.Result {
	return delivery.Result{Status: delivery.Deferred, Code: code, Enhanced: enhanced, Text: text}
}

// linkUnsupported reports the errors with which file systems without hard
// links (FAT, some FUSE and network mounts) refuse link(2); rename is the
// fallback the Maildir spec allows.
func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EMLINK) || errors.Is(err, syscall.EXDEV)
}
