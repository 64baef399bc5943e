package policy

// Paths: every file and directory the configuration makes hubd write or
// read, with the attribute that names it, so that `hubd check` can find
// what would stop `hubd run` (a spool directory it cannot create, a key it
// cannot read) and point at the line to fix. This package only lists them;
// the probing of the filesystem is cmd/hubd's (paths.go), keeping policy
// free of I/O beyond the configuration files.

import (
	"path/filepath"
	"slices"

	"github.com/hashicorp/hcl/v2"
)

// PathRole says what hubd does with a path.
type PathRole string

const (
	// Directories hubd creates at start (with their parents) and writes:
	// without them `hubd run` exits 1.
	PathSpool    PathRole = "spool directory"           // hub.spool_dir
	PathTracking PathRole = "tracking log directory"    // hub.tracking_log.dir, when enabled
	PathMaildrop PathRole = "maildrop directory"        // hub.maildrop_dir
	PathAdmin    PathRole = "admin socket"              // admin.socket: the socket is made in its directory
	PathMaildir  PathRole = "Maildir"                   // a mailbox's maildir, made at its first delivery
	PathTLSCert  PathRole = "TLS certificate"           // tls.cert_file, read at start and at each reload
	PathTLSKey   PathRole = "TLS private key"           // tls.key_file; Pair is its certificate
	PathClientCA PathRole = "TLS client CA certificate" // tls.client_ca_file

	PathJetStream       PathRole = "JetStream store directory" // queue.store_dir of the embedded NATS node
	PathNATSCredentials PathRole = "NATS credentials file"     // queue.credentials_file
)

// CreatedDir says whether hubd creates and writes the role's directory
// (Dir) at start, so that it cannot run without it.
func (r PathRole) CreatedDir() bool {
	switch r {
	case PathSpool, PathTracking, PathMaildrop, PathAdmin, PathJetStream:
		return true
	}
	return false
}

// PathUse is one path of the configuration.
type PathUse struct {
	Role PathRole
	Path string // absolute
	// Setting names the attribute in the operator's words, e.g.
	// `hub.spool_dir` or `receive_connector "in" tls.key_file`.
	Setting string
	// Range is the attribute's value; for a default (Default true), the
	// attribute it derives from (e.g. maildrop_dir beside spool_dir) or the
	// block.
	Range   hcl.Range
	Default bool
	// Pair, for a PathTLSKey, is the certificate file it must match.
	Pair string
}

// Dir is the directory the use writes in: Path itself, or the admin
// socket's directory.
func (u PathUse) Dir() string {
	if u.Role == PathAdmin {
		return filepath.Dir(u.Path)
	}
	return u.Path
}

// PathUses returns every path of the configuration, in the order of the
// files.
func (c *Config) PathUses() []PathUse { return slices.Clone(c.pathUses) }

// usePath records a path use.
func (l *loader) usePath(u PathUse) {
	l.cfg.pathUses = append(l.cfg.pathUses, u)
}

// collectHubPaths records the hub's directories and the admin socket,
// each at its attribute or, for a default, at spool_dir, which the
// defaults derive from (<spool_dir>/../maildrop, ../log/tracking,
// ../admin.sock).
func (l *loader) collectHubPaths() {
	if len(l.schema.Hubs) == 0 || l.cfg.Hub.SpoolDir == "" {
		return
	}
	s, h := l.schema.Hubs[0], &l.cfg.Hub
	at := func(set bool, rng hcl.Range) (hcl.Range, bool) {
		if set {
			return rng, false
		}
		return s.SpoolDirRange, true
	}
	l.usePath(PathUse{Role: PathSpool, Path: h.SpoolDir, Setting: "hub.spool_dir", Range: s.SpoolDirRange})
	if h.TrackingLog.Enabled && h.TrackingLog.Dir != "" {
		var rng hcl.Range
		t := s.TrackingLog
		set := t != nil && t.Dir != nil
		if set {
			rng = t.DirRange
		}
		rng, def := at(set, rng)
		l.usePath(PathUse{Role: PathTracking, Path: h.TrackingLog.Dir, Setting: "hub.tracking_log.dir", Range: rng, Default: def})
	}
	if h.MaildropDir != "" {
		rng, def := at(s.MaildropDir != nil, s.MaildropDirRange)
		l.usePath(PathUse{Role: PathMaildrop, Path: h.MaildropDir, Setting: "hub.maildrop_dir", Range: rng, Default: def})
	}
	if a := l.cfg.Admin; a.Socket != "" {
		var rng hcl.Range
		set := len(l.schema.Admins) > 0 && l.schema.Admins[0].Socket != nil
		if set {
			rng = l.schema.Admins[0].SocketRange
		}
		rng, def := at(set, rng)
		l.usePath(PathUse{Role: PathAdmin, Path: a.Socket, Setting: "admin.socket", Range: rng, Default: def})
	}
}

// collectTLSPaths records a receive connector's certificate files.
func (l *loader) collectTLSPaths(connector string, s *receiveTLSSchema, t ReceiveTLS) {
	if s == nil || t.SelfSigned {
		return
	}
	prefix := "receive_connector " + quote(connector) + " tls."
	if s.CertFile != nil {
		l.usePath(PathUse{Role: PathTLSCert, Path: t.CertFile, Setting: prefix + "cert_file", Range: s.CertFileRange})
	}
	if s.KeyFile != nil {
		l.usePath(PathUse{Role: PathTLSKey, Path: t.KeyFile, Setting: prefix + "key_file", Range: s.KeyFileRange, Pair: t.CertFile})
	}
	if s.ClientCAFile != nil {
		l.usePath(PathUse{Role: PathClientCA, Path: t.ClientCAFile, Setting: prefix + "client_ca_file", Range: s.ClientCARange})
	}
}

// collectMaildirPath records a mailbox's Maildir (not for one delivered
// over LMTP, which has none).
func (l *loader) collectMaildirPath(s mailboxSchema, mb Mailbox) {
	if mb.LMTP != "" || mb.Maildir == "" {
		return
	}
	u := PathUse{Role: PathMaildir, Path: mb.Maildir, Setting: "mailbox " + quote(mb.Address) + " maildir", Range: s.MaildirRange}
	if s.Maildir == nil {
		u.Range, u.Default = s.DefRange, true
	}
	l.usePath(u)
}

func quote(s string) string { return `"` + s + `"` }
