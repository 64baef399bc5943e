package passhash

import "testing"

// FuzzParse: no input makes Parse panic, and whatever it accepts stays
// within the bounds (so a hostile users file cannot ask for absurd work).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
		"$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
		"{BLF-CRYPT}$2a$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",
		"{", "$", "$argon2id$", "$argon2id$v=19$m=,t=,p=$$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			return
		}
		switch h.Scheme {
		case Bcrypt:
			if h.Cost < MinBcryptCost || h.Cost > MaxBcryptCost {
				t.Fatalf("accepted bcrypt cost %d", h.Cost)
			}
		case Argon2id:
			p := h.Argon2
			if p.Memory > MaxArgon2Memory || p.Time > MaxArgon2Time || p.Threads > MaxArgon2Threads ||
				p.Threads == 0 || p.Time == 0 || len(h.salt) < minSaltLen || len(h.key) < minKeyLen {
				t.Fatalf("accepted out-of-bounds %+v", h)
			}
		default:
			t.Fatalf("unknown scheme %q", h.Scheme)
		}
	})
}
