package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
)

// Hash is "sha256:<hex>" over the configuration files of c in the order
// of their names (each name, a NUL, its length, a NUL, its bytes), so that
// an operator can tell whether a file on disk is what a running hubd has
// in force (`hubctl config check` and `hubctl status` print it). The
// aliases files of aliases_file blocks (and the files they include) are
// part of the configuration and included, so that an edited aliases file
// shows as a new hash, and so is hub.users_file; so are the files of
// secrets (password files, DKIM keys) and the queue block's credentials,
// CA, client certificate and key files (a new one is a new
// configuration); other files the configuration names (the connectors'
// certificates, recipients files) are not.
func (c *Config) Hash() string {
	all := map[string][]byte{}
	for name, f := range c.files {
		if f != nil {
			all[name] = f.Bytes
		} else {
			all[name] = nil
		}
	}
	maps.Copy(all, c.hashedOnly)
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(all)) {
		b := all[name]
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// hashOnly makes the file at path (its bytes src) part of Config.Hash
// without rendering it: a file of secrets or hashes whose change is a new
// configuration (users_file, a smart host's password, a DKIM key).
func (l *loader) hashOnly(path string, src []byte) {
	if l.cfg.hashedOnly == nil {
		l.cfg.hashedOnly = map[string][]byte{}
	}
	l.cfg.hashedOnly[path] = src
}
