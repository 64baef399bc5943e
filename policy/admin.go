package policy

// The admin block: where hubd serves its admin API (internal/admin,
// docs/admin-api.md), which hubctl, mailq and `sendmail -bp` use.

import (
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Admin configures the admin API's listeners.
type Admin struct {
	// Socket is the Unix socket's path; default admin.sock beside the
	// spool directory (<spool_dir>/../admin.sock), like the tracking log's
	// default.
	Socket string
	// SocketMode is the socket file's mode; default 0660: the owner and
	// the group may operate the hub (as Postfix's postdrop group may
	// submit), nobody else.
	SocketMode os.FileMode
	// SocketGroup names the socket's group ("" keeps the process's);
	// SocketGID is its id, -1 when unset.
	SocketGroup string
	SocketGID   int
	// Listen is an optional "host:port" for the API over TCP; every
	// request then needs the bearer token read from TokenFile.
	Listen    string
	TokenFile string
	Token     string // the token read from TokenFile at load; never logged
}

type adminSchema struct {
	Socket           *string   `hcl:"socket,optional"`
	SocketRange      hcl.Range `hcl:"socket,attr_value_range"`
	SocketMode       *string   `hcl:"socket_mode,optional"`
	SocketModeRange  hcl.Range `hcl:"socket_mode,attr_value_range"`
	SocketGroup      *string   `hcl:"socket_group,optional"`
	SocketGroupRange hcl.Range `hcl:"socket_group,attr_value_range"`
	Listen           *string   `hcl:"listen,optional"`
	ListenRange      hcl.Range `hcl:"listen,attr_value_range"`
	TokenFile        *string   `hcl:"token_file,optional"`
	TokenFileRange   hcl.Range `hcl:"token_file,attr_value_range"`
	DefRange         hcl.Range `hcl:",def_range"`
}

func (l *loader) buildAdmin() {
	a := &l.cfg.Admin
	*a = Admin{SocketMode: 0o660, SocketGID: -1}
	if l.cfg.Hub.SpoolDir != "" {
		a.Socket = filepath.Join(filepath.Dir(l.cfg.Hub.SpoolDir), "admin.sock")
	}
	blocks := l.schema.Admins
	if len(blocks) == 0 {
		return
	}
	for _, extra := range blocks[1:] {
		l.errorf(extra.DefRange, "Duplicate admin block",
			"Only one admin block is allowed; the first is defined at %s.", rangeLine(blocks[0].DefRange))
	}
	s := blocks[0]
	if s.Socket != nil {
		if strings.TrimSpace(*s.Socket) == "" {
			l.errorf(s.SocketRange, "Invalid socket", "admin socket must not be empty.")
		} else {
			a.Socket = l.path(*s.Socket, s.SocketRange)
		}
	}
	if s.SocketMode != nil {
		m, err := strconv.ParseUint(*s.SocketMode, 8, 32)
		if err != nil || m > 0o777 || m&0o600 != 0o600 {
			l.errorf(s.SocketModeRange, "Invalid socket_mode",
				"socket_mode must be an octal file mode such as \"0660\" that lets the owner read and write (got %q).", *s.SocketMode)
		} else {
			a.SocketMode = os.FileMode(m)
		}
	}
	if s.SocketGroup != nil {
		a.SocketGroup = *s.SocketGroup
		g, err := user.LookupGroup(*s.SocketGroup)
		if err == nil {
			a.SocketGID, err = strconv.Atoi(g.Gid)
		}
		if err != nil {
			l.errorf(s.SocketGroupRange, "Unknown socket_group", "socket_group %q is not a group on this system: %v.", *s.SocketGroup, err)
		}
	}
	l.buildAdminTCP(s, a)
}

// buildAdminTCP checks listen and reads the token it needs.
func (l *loader) buildAdminTCP(s adminSchema, a *Admin) {
	if s.Listen != nil {
		if _, _, err := net.SplitHostPort(*s.Listen); err != nil {
			l.errorf(s.ListenRange, "Invalid listen", "listen must be \"host:port\", e.g. \"127.0.0.1:8025\": %v.", err)
		}
		a.Listen = *s.Listen
	}
	switch {
	case s.TokenFile == nil && a.Listen != "":
		l.errorf(s.ListenRange, "Missing token_file",
			"The admin API over TCP needs a bearer token: set token_file to a file holding it (e.g. made with: openssl rand -hex 32).")
	case s.TokenFile != nil:
		a.TokenFile = l.path(*s.TokenFile, s.TokenFileRange)
		b, err := os.ReadFile(a.TokenFile)
		switch {
		case err != nil:
			l.errorf(s.TokenFileRange, "Unreadable token_file", "token_file %s cannot be read: %v.", a.TokenFile, err)
		case len(strings.TrimSpace(string(b))) < 16:
			l.errorf(s.TokenFileRange, "Weak token", "token_file %s must hold a token of at least 16 characters.", a.TokenFile)
		default:
			a.Token = strings.TrimSpace(string(b))
		}
	}
}
