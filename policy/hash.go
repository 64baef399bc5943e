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
// shows as a new hash; other files the configuration names (certificates,
// password and recipients files) are not.
func (c *Config) Hash() string {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(c.files)) {
		var b []byte
		if f := c.files[name]; f != nil {
			b = f.Bytes
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
