// Package passhash checks and makes the password hashes hubd keeps for
// logins: bcrypt and Argon2id, in the textual forms operators already have.
//
// Accepted forms:
//
//   - bcrypt, Modular Crypt Format: "$2a$", "$2b$" or "$2y$", a two-digit
//     cost, "$", then 53 characters of salt and hash (what `htpasswd -B`,
//     `hubd hash-password` and Dovecot's BLF-CRYPT write). The variants
//     differ only in historic bugs of other implementations and verify the
//     same here.
//   - Argon2id in the PHC string format (RFC 9106 §4 names the parameters;
//     the encoding is the reference implementation's and libsodium's):
//     "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>", salt and
//     hash in unpadded standard base64. Only version 19 (0x13) exists.
//   - Either of those behind Dovecot's scheme prefix, "{BLF-CRYPT}" or
//     "{ARGON2ID}" (case-insensitive), so a Dovecot passwd-file's hashes
//     can be used unchanged. The prefix must name the scheme that follows.
//
// Bounds: a hash is work an attacker who can write configuration (or a
// careless operator) chooses for every AUTH, so parameters beyond what any
// sane deployment uses are refused rather than obeyed: bcrypt cost 4–16
// (16 is already several seconds a check), Argon2id m ≤ 256 MiB, t ≤ 10,
// p ≤ 16, m ≥ 8·p (RFC 9106 §3.1), salt 8–64 bytes, hash 16–64 bytes.
//
// Comparisons take the same time whether the password is right or wrong
// (crypto/subtle for Argon2id, bcrypt's own constant-time compare).
package passhash

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Scheme names a hash algorithm.
type Scheme string

const (
	Bcrypt   Scheme = "bcrypt"
	Argon2id Scheme = "argon2id"
)

// Bounds on the parameters a hash may ask for (see the package doc).
const (
	MinBcryptCost = bcrypt.MinCost // 4
	MaxBcryptCost = 16

	MaxArgon2Memory  = 256 << 10 // KiB: 256 MiB
	MaxArgon2Time    = 10
	MaxArgon2Threads = 16
	minSaltLen       = 8
	maxSaltLen       = 64
	minKeyLen        = 16
	maxKeyLen        = 64
)

// Argon2Params are Argon2id's cost parameters (RFC 9106 §3.1).
type Argon2Params struct {
	Memory  uint32 // m, KiB
	Time    uint32 // t, passes
	Threads uint8  // p, lanes
}

// DefaultArgon2 is what HashArgon2id uses when given zero parameters: RFC
// 9106 §4's second recommended option (64 MiB, 3 passes, 4 lanes).
var DefaultArgon2 = Argon2Params{Memory: 64 << 10, Time: 3, Threads: 4}

// Hash is a parsed, validated password hash.
type Hash struct {
	Scheme Scheme
	Cost   int          // bcrypt only
	Argon2 Argon2Params // Argon2id only

	bcrypt []byte // the MCF string, for bcrypt
	salt   []byte // Argon2id
	key    []byte // Argon2id
}

// Parse validates hash and returns it parsed. The error says what is wrong
// in words an operator can act on; it never echoes the hash.
func Parse(hash string) (*Hash, error) {
	s := hash
	prefix := ""
	if strings.HasPrefix(s, "{") {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return nil, errors.New("scheme prefix \"{\" is not closed by \"}\"")
		}
		prefix, s = strings.ToUpper(s[1:end]), s[end+1:]
		if prefix != "BLF-CRYPT" && prefix != "ARGON2ID" {
			return nil, fmt.Errorf("scheme {%s} is not supported (use {BLF-CRYPT} or {ARGON2ID})", prefix)
		}
	}
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		if prefix == "ARGON2ID" {
			return nil, errors.New("{ARGON2ID} prefix on a bcrypt hash")
		}
		return parseBcrypt(s)
	case strings.HasPrefix(s, "$argon2id$"):
		if prefix == "BLF-CRYPT" {
			return nil, errors.New("{BLF-CRYPT} prefix on an Argon2id hash")
		}
		return parseArgon2id(s)
	case strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return nil, errors.New("only the Argon2id variant is supported, not Argon2i or Argon2d")
	default:
		return nil, errors.New("not a bcrypt ($2a$, $2b$, $2y$) or Argon2id ($argon2id$) hash; " +
			"a plain password is never accepted (make a hash with `hubd hash-password`)")
	}
}

func parseBcrypt(s string) (*Hash, error) {
	cost, err := bcrypt.Cost([]byte(s))
	if err != nil || len(s) != 60 {
		return nil, errors.New("malformed bcrypt hash: expected $2b$NN$ and 53 characters of salt and hash")
	}
	if cost < MinBcryptCost || cost > MaxBcryptCost {
		return nil, fmt.Errorf("bcrypt cost %d is outside %d–%d", cost, MinBcryptCost, MaxBcryptCost)
	}
	return &Hash{Scheme: Bcrypt, Cost: cost, bcrypt: []byte(s)}, nil
}

// parseArgon2id reads "$argon2id$v=19$m=M,t=T,p=P$salt$hash".
func parseArgon2id(s string) (*Hash, error) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 {
		return nil, errors.New("malformed Argon2id hash: expected $argon2id$v=19$m=..,t=..,p=..$salt$hash")
	}
	if parts[2] != "v=19" {
		return nil, fmt.Errorf("Argon2id version %q is not supported (only v=19)", parts[2])
	}
	var p Argon2Params
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return nil, errors.New("malformed Argon2id parameters: expected m=..,t=..,p=..")
	}
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(fields[i], name+"=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || v == "" || v[0] == '+' || (len(v) > 1 && v[0] == '0') {
			return nil, fmt.Errorf("malformed Argon2id parameter %q: expected %s=<number>", fields[i], name)
		}
		switch name {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("Argon2id p=%d is outside 1–%d", n, MaxArgon2Threads)
			}
			p.Threads = uint8(n)
		}
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return nil, fmt.Errorf("Argon2id salt must be %d–%d bytes in unpadded base64", minSaltLen, maxSaltLen)
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return nil, fmt.Errorf("Argon2id hash must be %d–%d bytes in unpadded base64", minKeyLen, maxKeyLen)
	}
	return &Hash{Scheme: Argon2id, Argon2: p, salt: salt, key: key}, nil
}

func (p Argon2Params) check() error {
	switch {
	case p.Threads < 1 || p.Threads > MaxArgon2Threads:
		return fmt.Errorf("Argon2id p=%d is outside 1–%d", p.Threads, MaxArgon2Threads)
	case p.Time < 1 || p.Time > MaxArgon2Time:
		return fmt.Errorf("Argon2id t=%d is outside 1–%d", p.Time, MaxArgon2Time)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > MaxArgon2Memory:
		return fmt.Errorf("Argon2id m=%d KiB is outside %d–%d (at least 8 KiB per lane)", p.Memory, 8*uint32(p.Threads), MaxArgon2Memory)
	}
	return nil
}

// Verify reports whether password matches h.
func (h *Hash) Verify(password string) bool {
	switch h.Scheme {
	case Bcrypt:
		return bcrypt.CompareHashAndPassword(h.bcrypt, []byte(password)) == nil
	case Argon2id:
		got := argon2.IDKey([]byte(password), h.salt, h.Argon2.Time, h.Argon2.Memory, h.Argon2.Threads, uint32(len(h.key)))
		return subtle.ConstantTimeCompare(got, h.key) == 1
	}
	return false
}

// Verify parses hash and reports whether password matches it; a hash that
// does not parse is an error (and never matches).
func Verify(hash, password string) (bool, error) {
	h, err := Parse(hash)
	if err != nil {
		return false, err
	}
	return h.Verify(password), nil
}

// HashBcrypt returns the bcrypt hash ("$2a$") of password at cost.
// Passwords over 72 bytes are refused (bcrypt would ignore the rest).
func HashBcrypt(password string, cost int) (string, error) {
	if cost < MinBcryptCost || cost > MaxBcryptCost {
		return "", fmt.Errorf("bcrypt cost %d is outside %d–%d", cost, MinBcryptCost, MaxBcryptCost)
	}
	b, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	return string(b), err
}

// HashArgon2id returns the PHC string of password's Argon2id hash with a
// random 16-byte salt and a 32-byte hash; zero params mean DefaultArgon2.
func HashArgon2id(password string, p Argon2Params) (string, error) {
	if p == (Argon2Params{}) {
		p = DefaultArgon2
	}
	if err := p.check(); err != nil {
		return "", err
	}
	salt := make([]byte, 16)
	rand.Read(salt) // crypto/rand.Read never fails (Go 1.24)
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, 32)
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", p.Memory, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// Dummy returns a hash of a random password with h's scheme and parameters:
// checking a login that does not exist against it costs what checking one
// that does costs (RFC 4954 §9: do not disclose which users exist).
func (h *Hash) Dummy() (*Hash, error) {
	var s string
	var err error
	switch h.Scheme {
	case Argon2id:
		s, err = HashArgon2id(rand.Text(), h.Argon2)
	default:
		s, err = HashBcrypt(rand.Text(), h.Cost)
	}
	if err != nil {
		return nil, err
	}
	return Parse(s)
}

// Costlier reports whether checking a password against h is more work than
// against o: Argon2id (memory-hard) ranks above bcrypt, then the larger
// parameters win. It picks the hash a Dummy should imitate.
func (h *Hash) Costlier(o *Hash) bool {
	if h.Scheme != o.Scheme {
		return h.Scheme == Argon2id
	}
	if h.Scheme == Bcrypt {
		return h.Cost > o.Cost
	}
	a, b := h.Argon2, o.Argon2
	return uint64(a.Memory)*uint64(a.Time) > uint64(b.Memory)*uint64(b.Time)
}
