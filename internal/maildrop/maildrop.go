// Package maildrop is the hand-over between sendmail(1) and hubd: a
// directory that the sendmail command (cmd/sendmail, `hubd sendmail`) writes
// and that hubd's pickup sweeps into the queue with hub.Submit. It is modelled
// on Postfix's maildrop, postdrop(1) and pickup(8), so that mail submitted
// on the command line is safe while hubd is down and is delivered once it
// starts.
//
// # Permissions
//
// The directory is owned by the hubd user, group the drop group (for
// example hubd-drop, hub.maildrop_group) and mode 1730: the owner reads and
// sweeps it; the group may create files but neither list nor read it; others
// have no access at all; and the sticky bit stops one writer from removing or
// renaming another's file (Postfix's maildrop has the same mode). sendmail is
// installed setgid to the drop group, so any local user can drop mail through
// it, and no one can read or remove anyone else's. hubd makes the directory
// with that mode at start (Prepare), and sets its group when it may.
//
// A file is owned by the user who ran sendmail (setgid changes the group
// only). The pickup takes that owner as the submitting user, not the uid the
// file claims: the file content comes from the user, the owner from the
// kernel. Files are mode 0644: the directory already keeps everyone but hubd
// from reaching them, and hubd, not their owner, must read them.
//
// # Durability
//
// sendmail writes to a temporary name (".tmp." + id), fsyncs the file,
// renames it to its final name and makes the rename durable before it exits
// 0: "acknowledged means durable" (DESIGN.md invariant 1) holds for exit
// status 0 as it does for 250 after DATA. The drop group may not read the
// directory, so it cannot open it to fsync it; sendmail then calls syncfs(2)
// on the file's filesystem instead, which commits the rename too (slower, but
// once per command-line message). On any error the temporary file is removed
// and sendmail exits non-zero. A temporary file can only stay behind when
// sendmail is killed; the pickup never reads one and removes it after
// TempGrace. Nothing half-written is ever picked up: only final names are
// read, and a final name exists only for a complete, synced file.
//
// # File format (version 1)
//
// The final name is a queue id made with hub.NewQueueID (21 characters of
// base32hex). The content is:
//
//	hubd-maildrop 1 LF
//	one line of JSON: the Envelope LF
//	the message: RFC 5322, CRLF line endings, no dot-stuffing
//
// The pickup submits the message under that queue id. Before it submits, it
// asks the queue whether the id is there already: if so, an earlier pickup
// submitted the file and died before it removed it, and the file is only
// removed now. That closes the window between Submit and the removal against
// process crashes; it stays open only if the message was also delivered and
// removed from the queue in that window and the host lost power before the
// removal reached the disk, where a duplicate is the price (Postfix's pickup
// accepts the same: it removes the maildrop file after cleanup has queued
// it).
//
// A file that cannot be read as above (bad magic, bad JSON, no recipients, a
// malformed address, a name that is not a queue id) is moved to the corrupt/
// subdirectory, logged, and never tried again.
package maildrop

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hubd/hub"
	"hubd/policy"
)

// magic is the first line of every maildrop file.
const magic = "hubd-maildrop 1\n"

// tmpPrefix starts the name of a file being written.
const tmpPrefix = ".tmp."

// CorruptDir is the subdirectory where unreadable files are set aside.
const CorruptDir = "corrupt"

// maxEnvelopeLine bounds the envelope's JSON line (a few thousand
// recipients fit easily).
const maxEnvelopeLine = 4 << 20

// Envelope is the envelope of one dropped message, as sendmail saw it.
type Envelope struct {
	From       string      `json:"from"`            // reverse-path; "" is the null sender <>
	Recipients []Recipient `json:"recipients"`      // forward-paths, de-duplicated
	Ret        string      `json:"ret,omitempty"`   // -R: FULL or HDRS
	EnvID      string      `json:"envid,omitempty"` // -V: RFC 3461 ENVID
	Body       string      `json:"body,omitempty"`  // -B: 7BIT or 8BITMIME
	UID        int         `json:"uid"`             // the invoking user, as sendmail saw it (informational)
	User       string      `json:"user"`            // their login name
	Time       time.Time   `json:"time"`            // when sendmail ran
}

// Recipient is one forward-path with its RFC 3461 NOTIFY (sendmail -N, or
// RCPT ... NOTIFY= in a -bs session).
type Recipient struct {
	Address string   `json:"address"`
	Notify  []string `json:"notify,omitempty"` // "NEVER" or some of SUCCESS, FAILURE, DELAY; nil = default
}

// Validate checks what the pickup relies on.
func (e *Envelope) Validate() error {
	if len(e.Recipients) == 0 {
		return errors.New("no recipients")
	}
	if e.From != "" {
		if _, _, err := policy.SplitAddress(e.From); err != nil {
			return fmt.Errorf("sender: %v", err)
		}
	}
	for _, r := range e.Recipients {
		if _, _, err := policy.SplitAddress(r.Address); err != nil {
			return fmt.Errorf("recipient: %v", err)
		}
		for _, n := range r.Notify {
			switch n {
			case "NEVER", "SUCCESS", "FAILURE", "DELAY":
			default:
				return fmt.Errorf("notify: %q", n)
			}
		}
	}
	switch e.Ret {
	case "", "FULL", "HDRS":
	default:
		return fmt.Errorf("ret: %q", e.Ret)
	}
	switch e.Body {
	case "", "7BIT", "8BITMIME":
	default:
		return fmt.Errorf("body: %q", e.Body)
	}
	return nil
}

// Draft is a maildrop file being written.
type Draft struct {
	f    *os.File
	w    *bufio.Writer
	dir  string
	id   hub.QueueID
	tmp  string
	done bool
}

// Create starts a file in dir for env. The caller writes the message (CRLF
// line endings) to the Draft, then calls Commit, or Abort on any error.
func Create(dir string, env Envelope) (*Draft, error) {
	if err := env.Validate(); err != nil {
		return nil, err
	}
	line, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	id := hub.NewQueueID(time.Now())
	tmp := filepath.Join(dir, tmpPrefix+string(id))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	d := &Draft{f: f, w: bufio.NewWriterSize(f, 64<<10), dir: dir, id: id, tmp: tmp}
	d.w.WriteString(magic)
	d.w.Write(line)
	d.w.WriteByte('\n')
	return d, nil
}

// Write appends message content.
func (d *Draft) Write(p []byte) (int, error) { return d.w.Write(p) }

// Commit makes the file durable under its final name and returns its id.
// On error the temporary file is gone.
func (d *Draft) Commit() (hub.QueueID, error) {
	err := d.w.Flush()
	if err == nil {
		// 0644 whatever the umask: hubd, not the file's owner, reads it;
		// the directory's mode keeps everyone else out.
		err = d.f.Chmod(0o644)
	}
	if err == nil {
		err = d.f.Sync()
	}
	final := filepath.Join(d.dir, string(d.id))
	if err == nil {
		err = os.Rename(d.tmp, final)
	}
	if err != nil {
		d.Abort()
		return "", err
	}
	d.done = true
	if err := syncDir(d.dir, d.f); err != nil {
		// Not durable: take it back rather than acknowledge it. (The pickup
		// may have taken it already; then it is queued, and the error
		// makes the caller retry: a duplicate, never a loss.)
		os.Remove(final)
		d.f.Close()
		return "", err
	}
	return d.id, d.f.Close()
}

// Abort removes the temporary file.
func (d *Draft) Abort() {
	if d.done {
		return
	}
	d.done = true
	d.f.Close()
	os.Remove(d.tmp)
}

// Dir is the maildrop directory.
func (d *Draft) Dir() string { return d.dir }

// ID is the queue id the file will have.
func (d *Draft) ID() hub.QueueID { return d.id }

// File is a maildrop file opened for pickup.
type File struct {
	ID       hub.QueueID
	Envelope Envelope
	Body     io.Reader // the message, after the envelope line
	f        *os.File
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// CorruptError says a file cannot be read as a maildrop file: it goes to
// corrupt/ and is never tried again.
type CorruptError struct{ Reason string }

func (e *CorruptError) Error() string { return "corrupt maildrop file: " + e.Reason }

// Open reads a maildrop file's envelope. A *CorruptError means the file
// is not one; any other error is the filesystem's (the file may be retried).
func Open(path string) (*File, error) {
	id := hub.QueueID(filepath.Base(path))
	if !id.Valid() {
		return nil, &CorruptError{"the name is not a queue id"}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	file, err := parse(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	file.ID, file.f = id, f
	return file, nil
}

// parse reads the magic line and the envelope from r; the rest of r is the
// message.
func parse(r io.Reader) (*File, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(magic))
	if _, err := io.ReadFull(br, head); err != nil || string(head) != magic {
		return nil, &CorruptError{"no " + strings.TrimSpace(magic) + " line"}
	}
	line, err := readLine(br, maxEnvelopeLine)
	if err != nil {
		return nil, &CorruptError{"envelope: " + err.Error()}
	}
	var env Envelope
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, &CorruptError{"envelope: " + err.Error()}
	}
	if err := env.Validate(); err != nil {
		return nil, &CorruptError{"envelope: " + err.Error()}
	}
	return &File{Envelope: env, Body: br}, nil
}

func readLine(br *bufio.Reader, limit int) (string, error) {
	var b strings.Builder
	for {
		frag, err := br.ReadSlice('\n')
		b.Write(frag)
		if b.Len() > limit {
			return "", errors.New("line too long")
		}
		switch {
		case err == nil:
			return strings.TrimSuffix(b.String(), "\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return "", errors.New("truncated")
		default:
			return "", err
		}
	}
}
