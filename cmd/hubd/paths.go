package main

// `hubd check`'s path checks: what would stop `hubd run`, found before it
// runs. policy lists every path with the attribute that names it
// (policy.PathUses); here each is probed as the user running the check:
//
//   - the spool, tracking log and maildrop directories and the admin
//     socket's directory are created at start (mkdir -p) and written: each
//     must be a writable directory, or be creatable, that is the nearest
//     existing ancestor is a directory this user may write in. Otherwise
//     error — this is what `hubd run` would die of, e.g. under systemd's
//     ProtectSystem=strict a directory outside the unit's StateDirectory,
//     LogsDirectory, RuntimeDirectory and ReadWritePaths is on a read-only
//     mount (EROFS).
//   - the maildrop with maildrop_group: hubd must be root or a member of the
//     group to give the directory to it, and own it if it exists.
//   - TLS certificate, key and client CA files must be readable, and each
//     key must match its certificate. Otherwise error.
//   - a Maildir's directory is made at the first delivery: one that cannot
//     be created or written is a warning (mail for that mailbox would be
//     deferred, not lost, and the directory may be made later).
//
// The probes are made as the current user: run `hubd check` as the user
// hubd runs as (systemd's ExecStartPre= does, inside the same sandbox), or
// as root. A check made elsewhere — on a build machine, as another user —
// can skip them with -paths=false; the configuration itself is still
// checked.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/sys/unix"

	"hubd/policy"
)

// checkPaths probes every path of cfg as this process's user and returns
// one diagnostic per problem, at the attribute that names the path.
func checkPaths(cfg *policy.Config) hcl.Diagnostics {
	var diags hcl.Diagnostics
	add := func(sev hcl.DiagnosticSeverity, u policy.PathUse, summary, detail string) {
		if u.Default {
			detail += fmt.Sprintf(" (%s is not set: it defaults to %s, beside what this attribute names.)", u.Setting, u.Path)
		}
		rng := u.Range
		diags = append(diags, &hcl.Diagnostic{Severity: sev, Summary: summary, Detail: detail, Subject: &rng})
	}
	who := currentUser()
	for _, u := range cfg.PathUses() {
		switch {
		case u.Role.CreatedDir():
			what := string(u.Role)
			if u.Role == policy.PathAdmin {
				what = "admin socket's directory"
			}
			if problem, denied := probeDir(u.Dir()); problem != "" {
				detail := fmt.Sprintf("hubd run as %s would fail: the %s %s %s.", who, what, u.Dir(), problem)
				if denied {
					detail += sandboxHint
				}
				add(hcl.DiagError, u, "Unusable "+what, detail)
			} else if u.Role == policy.PathMaildrop && cfg.Hub.MaildropGroup != "" {
				if problem := probeMaildropGroup(u.Path, cfg.Hub.MaildropGroup); problem != "" {
					add(hcl.DiagError, u, "Unusable maildrop directory", "hubd run would fail: "+problem)
				}
			}
		case u.Role == policy.PathMaildir:
			if problem, _ := probeDir(u.Path); problem != "" {
				add(hcl.DiagWarning, u, "Maildir not writable",
					fmt.Sprintf("Deliveries by hubd running as %s would be deferred: the Maildir %s %s.", who, u.Path, problem))
			}
		default: // files hubd reads
			if _, err := os.ReadFile(u.Path); err != nil {
				add(hcl.DiagError, u, "Unreadable "+string(u.Role),
					fmt.Sprintf("hubd run as %s would fail: the %s %s cannot be read: %v.", who, u.Role, u.Path, unwrapPath(err)))
				continue
			}
			if u.Role == policy.PathTLSKey && u.Pair != "" {
				if _, err := os.ReadFile(u.Pair); err != nil {
					continue // reported at cert_file
				}
				if _, err := tls.LoadX509KeyPair(u.Pair, u.Path); err != nil {
					add(hcl.DiagError, u, "TLS key does not match",
						fmt.Sprintf("%s and the certificate %s are not a key pair: %v.", u.Path, u.Pair, err))
				}
			}
		}
	}
	return diags
}

// sandboxHint follows a directory hubd may not write.
const sandboxHint = " Under systemd, the directories hubd writes must be in the unit's StateDirectory=, LogsDirectory=," +
	" RuntimeDirectory= or ReadWritePaths= (ProtectSystem=strict mounts everything else read-only);" +
	" check as the user hubd runs as, or skip this check with hubd check -paths=false."

// probeDir says why dir cannot be made by `mkdir -p` and then written by
// this process, or "" when it can: an existing directory must be writable
// and searchable; a missing one needs its nearest existing ancestor to be.
// denied is true when permissions or a read-only mount are the cause.
func probeDir(dir string) (problem string, denied bool) {
	existing := dir
	for {
		st, err := os.Stat(existing)
		switch {
		case err == nil && !st.IsDir() && existing == dir:
			return "is not a directory", false
		case err == nil && !st.IsDir():
			return "cannot be created: " + existing + " is not a directory", false
		case err == nil:
			if err := unix.Faccessat(unix.AT_FDCWD, existing, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
				if existing == dir {
					return "is not writable (" + err.Error() + ")", true
				}
				return "cannot be created: " + existing + " is not writable (" + err.Error() + ")", true
			}
			return "", false
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
			parent := filepath.Dir(existing)
			if parent == existing {
				return "cannot be created: no part of it exists", false
			}
			existing = parent
		default:
			return "cannot be reached (" + unwrapPath(err).Error() + ")", errors.Is(err, fs.ErrPermission)
		}
	}
}

// probeMaildropGroup says why hubd could not give the maildrop to group
// and make it mode 1730 (internal/maildrop.Prepare), or "".
func probeMaildropGroup(dir, group string) string {
	if os.Geteuid() == 0 {
		return ""
	}
	if st, err := os.Stat(dir); err == nil {
		if uid := statUID(st); uid >= 0 && uid != os.Geteuid() {
			return fmt.Sprintf("the maildrop %s belongs to uid %d; hubd, running as %s, must own it to keep it mode 1730.",
				dir, uid, currentUser())
		}
	}
	g, err := policy.LookupGroup(group)
	if err != nil {
		return "" // reported by the loader at maildrop_group
	}
	gid, _ := strconv.Atoi(g.Gid)
	groups, _ := os.Getgroups()
	if gid == os.Getegid() || slices.Contains(groups, gid) {
		return ""
	}
	return fmt.Sprintf("%s is not a member of maildrop_group %q, so it cannot give the maildrop %s to that group"+
		" (usermod -aG %s <hubd's user>, or SupplementaryGroups=%s in the unit).", currentUser(), group, dir, group, group)
}

// statUID is the owner of a file, or -1 when the platform does not say.
func statUID(st fs.FileInfo) int {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(sys.Uid)
	}
	return -1
}

// currentUser names this process's user as "name (uid N)".
func currentUser() string {
	uid := os.Geteuid()
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("user %s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// unwrapPath drops the *PathError's path, which the message already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
