package maildrop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"hubd/hub"
	"hubd/internal/message"
	"hubd/policy"
)

// The pickup (Postfix's pickup(8)): sweeps the maildrop at start, whenever a
// file is renamed into it (inotify: the rename that makes a file final is
// itself the signal, so an unprivileged sendmail needs no socket or
// permission to wake hubd, and nothing can be spoofed but a sweep), and
// every SweepInterval as a safety net (a lost event, a full inotify queue,
// a file left by a failed Submit). Each file becomes one hub.Submit with
// Connector "pickup"; the file is removed only after Submit returned.

// Options configure a Pickup.
type Options struct {
	Dir       string
	Group     string // the drop group (Prepare); "" leaves the directory's group
	Submitter hub.Submitter
	// Queued reports whether a queue id is in the queue already (a file
	// submitted by an earlier pickup that died before removing it).
	Queued func(hub.QueueID) bool
	// Hostname names this host in the Received: field and Message-ID; read
	// at each file, so a reload takes effect.
	Hostname      func() string
	Logger        *slog.Logger
	SweepInterval time.Duration // default 60s (Postfix's pickup polls each 60s too)
	TempGrace     time.Duration // default 1h: temporary files older than this are debris
}

// Pickup sweeps one maildrop directory into the queue.
type Pickup struct {
	opts   Options
	log    *slog.Logger
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	cancel context.CancelFunc
	watch  io.Closer  // the inotify descriptor; nil when unavailable
	sweep  sync.Mutex // one sweep at a time: a file is never submitted twice at once
	mu     sync.Mutex
	swept  int // files handled since start, for tests
}

// Prepare makes dir (and dir/corrupt) as the maildrop must be: mode 1730,
// owned by this process's user, group group when set.
func Prepare(dir, group string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if group != "" {
		g, err := policy.LookupGroup(group)
		if err != nil {
			return err
		}
		gid, err := strconv.Atoi(g.Gid)
		if err != nil {
			return fmt.Errorf("group %s: gid %q", group, g.Gid)
		}
		if err := os.Chown(dir, -1, gid); err != nil {
			return fmt.Errorf("cannot give %s to group %s (hubd must run as root or as a member of %s): %w", dir, group, group, err)
		}
	}
	if err := os.Chmod(dir, 0o730|fs.ModeSticky); err != nil {
		return err
	}
	return os.MkdirAll(filepath.Join(dir, CorruptDir), 0o700)
}

// Start prepares the directory, sweeps it once and keeps sweeping until
// Stop.
func Start(opts Options) (*Pickup, error) {
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Minute
	}
	if opts.TempGrace <= 0 {
		opts.TempGrace = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := Prepare(opts.Dir, opts.Group); err != nil {
		return nil, fmt.Errorf("maildrop %s: %w", opts.Dir, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pickup{opts: opts, log: opts.Logger.With("component", "pickup"), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	w, err := watchRenames(opts.Dir, p.poke)
	if err != nil {
		p.log.Warn("no inotify on the maildrop; sweeping it periodically only", "err", err, "interval", opts.SweepInterval)
	}
	p.watch = w
	p.poke()
	go p.run(ctx)
	return p, nil
}

// poke asks for a sweep.
func (p *Pickup) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Stop ends sweeping. A Submit in progress is cancelled when ctx ends
// (its file stays for the next start); Stop waits for it either way.
func (p *Pickup) Stop(ctx context.Context) error {
	close(p.stop)
	if p.watch != nil {
		p.watch.Close()
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.cancel()
		<-p.done
		return ctx.Err()
	}
}

func (p *Pickup) run(ctx context.Context) {
	defer close(p.done)
	defer p.cancel()
	tick := time.NewTicker(p.opts.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		case <-tick.C:
		}
		p.Sweep(ctx)
	}
}

// Sweep picks up every final file in the directory, oldest name first
// (names are queue ids, which sort by time), and removes stale temporary
// files.
func (p *Pickup) Sweep(ctx context.Context) {
	p.sweep.Lock()
	defer p.sweep.Unlock()
	entries, err := os.ReadDir(p.opts.Dir)
	if err != nil {
		p.log.Error("cannot read the maildrop", "dir", p.opts.Dir, "err", err)
		return
	}
	for _, e := range entries {
		select {
		case <-p.stop:
			return
		default:
		}
		name := e.Name()
		switch {
		case name == CorruptDir:
		case strings.HasPrefix(name, tmpPrefix):
			p.removeStale(e)
		case strings.HasPrefix(name, "."):
		default:
			p.pick(ctx, name)
		}
	}
}

// removeStale removes a temporary file older than TempGrace: what a
// sendmail killed while writing left behind.
func (p *Pickup) removeStale(e fs.DirEntry) {
	info, err := e.Info()
	if err != nil || time.Since(info.ModTime()) < p.opts.TempGrace {
		return
	}
	if os.Remove(filepath.Join(p.opts.Dir, e.Name())) == nil {
		p.log.Info("removed an unfinished maildrop file", "file", e.Name(), "age", time.Since(info.ModTime()).Round(time.Second))
	}
}

// pick submits one file and removes it.
func (p *Pickup) pick(ctx context.Context, name string) {
	path := filepath.Join(p.opts.Dir, name)
	f, err := Open(path)
	var ce *CorruptError
	switch {
	case errors.As(err, &ce):
		p.quarantine(name, err)
		return
	case errors.Is(err, fs.ErrNotExist):
		return
	case err != nil:
		p.log.Error("cannot open a maildrop file; will retry", "file", name, "err", err)
		return
	}
	defer f.Close()
	if p.opts.Queued != nil && p.opts.Queued(f.ID) {
		p.log.Info("maildrop file already queued (an earlier pickup stopped before removing it); removing it", "queue_id", string(f.ID))
		p.remove(path)
		return
	}
	uid, login := p.owner(f)
	env, body := p.envelope(f, uid, login)
	_, err = p.opts.Submitter.Submit(ctx, env, body)
	var r *policy.Reply
	switch {
	case errors.As(err, &r) && r.Code >= 500:
		p.quarantine(name, err)
		return
	case err != nil:
		p.log.Warn("pickup deferred: the queue did not take the message; it stays in the maildrop", "queue_id", string(f.ID), "err", err)
		return
	}
	p.log.Info("queued", "queue_id", string(f.ID), "from", env.From, "rcpts", len(env.Recipients),
		"uid", uid, "user", login, "message_id", env.MessageID)
	p.remove(path)
	p.mu.Lock()
	p.swept++
	p.mu.Unlock()
}

// owner is the file's owner: the user who ran sendmail, as the kernel says.
func (p *Pickup) owner(f *File) (int, string) {
	uid := -1
	if st, err := f.f.Stat(); err == nil {
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			uid = int(s.Uid)
		}
	}
	login := "uid" + strconv.Itoa(uid)
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		login = u.Username
	}
	return uid, login
}

// envelope builds the hub envelope and the content to queue: our Received:
// field first, a Message-ID: and Date: when missing (RFC 5322 §3.6; Postfix
// adds both to local submissions), hub-internal header fields removed (a
// local user is not trusted with them).
func (p *Pickup) envelope(f *File, uid int, login string) (hub.Envelope, io.Reader) {
	host := p.opts.Hostname()
	now := time.Now()
	env := hub.Envelope{ID: f.ID, From: f.Envelope.From, Body: f.Envelope.Body, DSNRet: f.Envelope.Ret,
		DSNEnvID: f.Envelope.EnvID, ReceivedAt: now, Connector: "pickup"}
	for _, r := range f.Envelope.Recipients {
		env.Recipients = append(env.Recipients, hub.Recipient{Address: r.Address, Notify: r.Notify})
	}
	mr := message.NewReader(f.Body, message.Options{
		Received:     Received(host, string(f.ID), uid, login, now),
		AddMessageID: "<" + string(f.ID) + "@" + host + ">",
		AddDate:      true,
	})
	content := io.Reader(message.StripOrgHeaders(mr))
	// The header section is examined on the first read: read it now so that
	// the envelope carries the Message-ID for the logs and tracking.
	head := make([]byte, 4096)
	n, err := io.ReadAtLeast(content, head, 1)
	env.MessageID = mr.MessageID()
	content = io.MultiReader(bytes.NewReader(head[:n]), content)
	if err != nil && err != io.EOF {
		content = io.MultiReader(bytes.NewReader(head[:n]), errReader{err})
	}
	return env, content
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Received is the pickup's trace field, in RFC 5321 §4.4 form without a
// From clause (the message came from no network peer), the invoking user in
// a comment as Postfix writes it ("by host (Postfix, from userid 1000)"):
//
//	Received: by mx.example.com (hubd pickup, from userid 1000 alice)
//		id 0123456789abcdefghijk; Mon, 2 Jan 2006 15:04:05 -0700
func Received(host, id string, uid int, login string, when time.Time) string {
	return fmt.Sprintf("Received: by %s (hubd pickup, from userid %d %s)\r\n\tid %s; %s\r\n",
		safeToken(host), uid, safeToken(login), id, when.Format(time.RFC1123Z))
}

// safeToken keeps what may stand in a comment of a header field.
func safeToken(s string) string {
	return strings.Map(func(r rune) rune {
		if r > ' ' && r < 0x7f && !strings.ContainsRune("()\\", r) {
			return r
		}
		return '?'
	}, s)
}

// remove deletes a picked-up file durably.
func (p *Pickup) remove(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.log.Error("cannot remove a picked-up maildrop file", "file", path, "err", err)
		return
	}
	if d, err := os.Open(p.opts.Dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// quarantine moves a file that can never be queued to corrupt/.
func (p *Pickup) quarantine(name string, why error) {
	to := filepath.Join(p.opts.Dir, CorruptDir, name)
	if err := os.Rename(filepath.Join(p.opts.Dir, name), to); err != nil {
		p.log.Error("cannot move a bad maildrop file aside", "file", name, "err", err)
		return
	}
	p.log.Error("maildrop file moved aside; it will not be tried again", "file", to, "err", why)
}

// Swept returns how many files have been queued since Start.
func (p *Pickup) Swept() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.swept
}
