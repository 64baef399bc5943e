package passhash

import (
	"strings"
	"testing"
)

// fastArgon keeps the tests quick: 64 KiB, one pass, one lane.
var fastArgon = Argon2Params{Memory: 64, Time: 1, Threads: 1}

func TestBcryptRoundTrip(t *testing.T) {
	h, err := HashBcrypt("correct horse", MinBcryptCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{h, "{BLF-CRYPT}" + h, "{blf-crypt}" + h, "$2y$" + h[4:], "$2b$" + h[4:]} {
		ok, err := Verify(form, "correct horse")
		if err != nil || !ok {
			t.Errorf("Verify(%q, right) = %v, %v", form, ok, err)
		}
		if ok, _ := Verify(form, "wrong horse"); ok {
			t.Errorf("Verify(%q, wrong) = true", form)
		}
	}
}

func TestArgon2idRoundTrip(t *testing.T) {
	h, err := HashArgon2id("correct horse", fastArgon)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q", h)
	}
	for _, form := range []string{h, "{ARGON2ID}" + h} {
		ok, err := Verify(form, "correct horse")
		if err != nil || !ok {
			t.Errorf("Verify(%q, right) = %v, %v", form, ok, err)
		}
		if ok, _ := Verify(form, "correct horsE"); ok {
			t.Errorf("Verify(%q, wrong) = true", form)
		}
	}
}

// TestArgon2idKnownVector checks against a hash made by another
// implementation (the argon2 reference CLI: `echo -n password | argon2
// somesalt -id -t 2 -m 16 -p 1 -l 32 -e`), so our encoding is theirs.
func TestArgon2idKnownVector(t *testing.T) {
	const h = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	ok, err := Verify(h, "password")
	if err != nil || !ok {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
}

func TestParseRefuses(t *testing.T) {
	good, _ := HashArgon2id("x", fastArgon)
	saltHash := good[strings.LastIndex(good[:strings.LastIndex(good, "$")], "$"):]
	for _, tc := range []struct{ hash, want string }{
		{"secret", "plain password is never accepted"},
		{"", "not a bcrypt"},
		{"{PLAIN}secret", "scheme {PLAIN} is not supported"},
		{"{BLF-CRYPT", "not closed"},
		{"{ARGON2ID}$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", "{ARGON2ID} prefix on a bcrypt"},
		{"{BLF-CRYPT}" + good, "{BLF-CRYPT} prefix on an Argon2id"},
		{"$2y$04$short", "malformed bcrypt"},
		{"$2y$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", "bcrypt cost 31 is outside 4–16"},
		{"$argon2i$v=19$m=64,t=1,p=1" + saltHash, "only the Argon2id variant"},
		{"$argon2id$v=16$m=64,t=1,p=1" + saltHash, "version"},
		{"$argon2id$v=19$m=64,t=1" + saltHash, "expected m=..,t=..,p=.."},
		{"$argon2id$v=19$t=1,m=64,p=1" + saltHash, "malformed Argon2id parameter"},
		{"$argon2id$v=19$m=064,t=1,p=1" + saltHash, "malformed Argon2id parameter"},
		{"$argon2id$v=19$m=4194304,t=1,p=1" + saltHash, "m=4194304 KiB is outside"},
		{"$argon2id$v=19$m=64,t=1000,p=1" + saltHash, "t=1000 is outside"},
		{"$argon2id$v=19$m=64,t=1,p=0" + saltHash, "p=0 is outside"},
		{"$argon2id$v=19$m=64,t=1,p=300" + saltHash, "p=300 is outside"},
		{"$argon2id$v=19$m=8,t=1,p=4" + saltHash, "at least 8 KiB per lane"},
		{"$argon2id$v=19$m=64,t=1,p=1$c2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc", "salt must be 8–64 bytes"},
		{"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$CTFh", "hash must be 16–64 bytes"},
		{"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ=$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc", "salt must be"},
		{"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc$", "malformed Argon2id hash"},
	} {
		_, err := Parse(tc.hash)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.hash, err, tc.want)
		}
		if ok, _ := Verify(tc.hash, "secret"); ok {
			t.Errorf("Verify(%q) matched", tc.hash)
		}
	}
}

func TestHashRefusesBounds(t *testing.T) {
	if _, err := HashBcrypt("x", 17); err == nil {
		t.Error("bcrypt cost 17 accepted")
	}
	if _, err := HashArgon2id("x", Argon2Params{Memory: 1 << 30, Time: 1, Threads: 1}); err == nil {
		t.Error("1 TiB Argon2id accepted")
	}
}

func TestDummyAndCostlier(t *testing.T) {
	b4, _ := HashBcrypt("x", 4)
	b5, _ := HashBcrypt("x", 5)
	a, _ := HashArgon2id("x", fastArgon)
	hb4, _ := Parse(b4)
	hb5, _ := Parse(b5)
	ha, _ := Parse(a)
	if !hb5.Costlier(hb4) || hb4.Costlier(hb5) || !ha.Costlier(hb5) || hb5.Costlier(ha) {
		t.Error("Costlier ranks wrongly")
	}
	for _, h := range []*Hash{hb5, ha} {
		d, err := h.Dummy()
		if err != nil {
			t.Fatal(err)
		}
		if d.Scheme != h.Scheme || d.Cost != h.Cost || d.Argon2 != h.Argon2 {
			t.Errorf("dummy %+v for %+v", d, h)
		}
		if d.Verify("x") {
			t.Error("dummy matches a real password")
		}
	}
}
