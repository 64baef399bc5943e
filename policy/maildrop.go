package policy

import (
	"os/user"
	"path/filepath"
	"strings"
)

// buildMaildrop fills Hub.MaildropDir and Hub.MaildropGroup. The directory
// defaults to a sibling of the spool, as the tracking log and the default
// Maildirs do. The group must exist on this host (by name or number), so that
// `hubd check` catches a group that `hubd run` could not give the directory:
// sendmail, installed setgid to that group, could not write into it.
func (l *loader) buildMaildrop(s hubSchema) {
	h := &l.cfg.Hub
	if h.SpoolDir != "" {
		h.MaildropDir = filepath.Join(filepath.Dir(h.SpoolDir), "maildrop")
	}
	if s.MaildropDir != nil {
		if strings.TrimSpace(*s.MaildropDir) == "" {
			l.errorf(s.MaildropDirRange, "Invalid maildrop_dir", "maildrop_dir must not be empty.")
		} else {
			h.MaildropDir = l.path(*s.MaildropDir, s.MaildropDirRange)
		}
	}
	if s.MaildropGroup == nil {
		return
	}
	g := strings.TrimSpace(*s.MaildropGroup)
	if g == "" {
		l.errorf(s.MaildropGroupRange, "Invalid maildrop_group", "maildrop_group must name a group (e.g. \"hubd-drop\").")
		return
	}
	if _, err := LookupGroup(g); err != nil {
		l.errorf(s.MaildropGroupRange, "Unknown maildrop_group",
			"%v. Create it (groupadd --system %s) and install sendmail setgid to it, or leave maildrop_group out.", err, g)
		return
	}
	h.MaildropGroup = g
}

// LookupGroup finds a group by name. A number is taken as a group id as it
// is, listed in the group database or not, as chgrp(1) takes one.
func LookupGroup(name string) (*user.Group, error) {
	if strings.Trim(name, "0123456789") == "" {
		return &user.Group{Gid: name, Name: name}, nil
	}
	return user.LookupGroup(name)
}
