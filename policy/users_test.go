package policy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"hubd/policy/passhash"
)

// Test hashes: cheap to make, valid for policy/passhash.
func testBcrypt(t *testing.T, pw string) string {
	t.Helper()
	h, err := passhash.HashBcrypt(pw, passhash.MinBcryptCost)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func testArgon2id(t *testing.T, pw string) string {
	t.Helper()
	h, err := passhash.HashArgon2id(pw, passhash.Argon2Params{Memory: 64, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestUserBlocks(t *testing.T) {
	dir := t.TempDir()
	b, a := testBcrypt(t, "pw"), testArgon2id(t, "pw")
	src := baseConfig + `
user "Relay@Example.com" {
  password_hash = "` + a + `"
}
user "scanner" {
  password_hash = "{BLF-CRYPT}` + b + `"
  senders       = ["scanner@example.com", "@Printers.Example.com"]
}
auth_backend "dovecot" {
  socket  = "run/auth-client"
  timeout = "2s"
  senders_domain_match = true
}
receive_connector "sub" {
  bind         = ["127.0.0.1:10587"]
  auth         = ["plain"]
  allow_insecure_auth = true
  auth_backend = "dovecot"
}
`
	cfg, diags := loadSrc(t, dir, src)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	if len(cfg.Users) != 2 {
		t.Fatalf("users %+v", cfg.Users)
	}
	if u := cfg.UserFor("relay@EXAMPLE.com"); u == nil || !slices.Equal(u.Senders, []string{"relay@example.com"}) || u.Source != "test.hcl:11" {
		t.Errorf("relay user %+v", u)
	}
	if u := cfg.UserFor("Scanner"); u == nil || !slices.Equal(u.Senders, []string{"scanner@example.com", "@printers.example.com"}) {
		t.Errorf("scanner user %+v", u)
	}
	if login, hash := cfg.Credential("SCANNER"); login != "scanner" || hash != "{BLF-CRYPT}"+b {
		t.Errorf("Credential(SCANNER) = %q, %q", login, hash)
	}
	if login, _ := cfg.Credential("alice@example.com"); login != "" {
		t.Errorf("alice has no password_hash, yet Credential = %q", login)
	}
	be := cfg.AuthBackend("dovecot")
	if be == nil || be.Socket != filepath.Join(absDir(t, dir), "run/auth-client") || be.Timeout != 2*time.Second ||
		be.Service != "smtp" || !be.SendersDomainMatch || be.Type != AuthDovecot {
		t.Errorf("auth backend %+v", be)
	}
	if rc := cfg.ReceiveConnectors[1]; rc.AuthBackend != "dovecot" {
		t.Errorf("connector auth_backend %q", rc.AuthBackend)
	}
	if cfg.ReceiveConnectors[0].AuthBackend != "" {
		t.Error("default connector has an auth_backend")
	}
}

func absDir(t *testing.T, dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func TestCheckSenderUsersAndBackends(t *testing.T) {
	dir := t.TempDir()
	src := baseConfig + `
mailbox "bob@example.com" {
  password_hash = "` + testBcrypt(t, "pw") + `"
  addresses     = ["robert@example.com"]
}
user "scanner" {
  password_hash = "` + testBcrypt(t, "pw") + `"
  senders       = ["scanner@example.com", "@printers.example.com"]
}
auth_backend "dovecot" { socket = "/run/dovecot/auth-client" }
auth_backend "wide" {
  socket = "/run/dovecot/auth-client"
  senders_domain_match = true
}
`
	cfg, diags := loadSrc(t, dir, src)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	authed := Rights(RightSubmit)
	denied := "550 5.7.1 Not authorized to send as <"
	for _, tc := range []struct {
		backend, login, from string
		ok                   bool
	}{
		{"", "scanner", "scanner@example.com", true},
		{"", "SCANNER", "scanner+tag@example.com", true},
		{"", "scanner", "anyone@printers.example.com", true},
		{"", "scanner", "anyone@sub.printers.example.com", false}, // @domain is that domain only
		{"", "scanner", "alice@example.com", false},
		{"", "bob@example.com", "robert@example.com", true},
		{"", "bob@example.com", "scanner@example.com", false},
		{"dovecot", "carol@example.org", "carol@example.org", true},
		{"dovecot", "carol@example.org", "carol+x@example.org", true},
		{"dovecot", "carol@example.org", "dave@example.org", false},
		{"dovecot", "bob@example.com", "robert@example.com", true}, // the mailbox of the login
		{"dovecot", "scanner", "scanner@example.com", false},       // a local user's senders are not a backend login's
		{"dovecot", "carol", "carol@example.org", false},
		{"wide", "carol@example.org", "dave@example.org", true},
		{"wide", "carol@example.org", "dave@example.com", false},
		{"missing", "carol@example.org", "carol@example.org", false},
	} {
		r := cfg.CheckSenderVia(authed, tc.backend, tc.login, tc.from)
		if tc.ok != (r == nil) || r != nil && !strings.HasPrefix(r.Error(), denied) {
			t.Errorf("CheckSenderVia(%q, %q, %q) = %v, want ok=%v", tc.backend, tc.login, tc.from, r, tc.ok)
		}
	}
	if r := cfg.CheckSenderVia(authed|Rights(RightAnySender), "dovecot", "carol", "x@y.example"); r != nil {
		t.Errorf("any_sender: %v", r)
	}
}

// userCases: each source marks the line its diagnostic must point at with
// "# <-", as validationCases do.
var userCases = []struct{ name, extra, summary string }{
	{"plaintext user password", `
user "relay@example.com" {
  password_hash = "hunter2" # <-
}`, "Invalid password_hash"},
	{"absurd bcrypt cost", `
user "relay@example.com" {
  password_hash = "$2y$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234" # <-
}`, "Invalid password_hash"},
	{"absurd argon2 memory", `
mailbox "bob@example.com" {
  password_hash = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc" # <-
}`, "Invalid password_hash"},
	{"missing password", `
user "relay@example.com" { # <-
}`, "Missing required argument"},
	{"name login without senders", `
user "scanner" { # <-
  password_hash = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
}`, "Missing senders"},
	{"empty senders", `
user "scanner" {
  password_hash = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
  senders       = [] # <-
}`, "Empty senders"},
	{"bad sender", `
user "scanner" {
  password_hash = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
  senders       = ["ok@example.com", "@exa mple.com"] # <-
}`, "Invalid sender"},
	{"bad login", `
user "scan ner" { # <-
  password_hash = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
  senders       = ["ok@example.com"]
}`, "Invalid login"},
	{"login is a mailbox", `
user "Alice@example.com" { # <-
  password_hash = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
}`, `Duplicate login "Alice@example.com"`},
	{"login twice", `
user "relay@example.com" {
  password_hash = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
}
user "RELAY@example.com" { # <-
  password_hash = "$2y$04$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
}`, `Duplicate login "RELAY@example.com"`},
	{"backend without socket", `
auth_backend "dovecot" { # <-
  timeout = "5s"
}`, "Missing socket"},
	{"backend bad timeout", `
auth_backend "dovecot" {
  socket  = "/run/dovecot/auth-client"
  timeout = "0s" # <-
}`, "Invalid duration"},
	{"backend bad type", `
auth_backend "ldap" {
  socket = "/run/x"
  type   = "ldap" # <-
}`, "Invalid auth_backend type"},
	{"backend twice", `
auth_backend "dovecot" { socket = "/run/a" }
auth_backend "dovecot" { socket = "/run/b" } # <-`, `Duplicate auth_backend "dovecot"`},
	{"connector names unknown backend", `
receive_connector "sub" {
  bind         = ["127.0.0.1:10587"]
  auth_backend = "dovecot" # <-
}`, "Unknown auth_backend"},
}

func TestUserValidationErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range userCases {
		t.Run(tc.name, func(t *testing.T) {
			src := baseConfig + tc.extra
			want := markedLine(t, src)
			cfg, diags := loadSrc(t, dir, src)
			if cfg != nil {
				t.Fatalf("loaded without error; want %q at line %d", tc.summary, want)
			}
			var got []string
			for _, d := range diags {
				if d.Severity == hcl.DiagError && d.Summary == tc.summary && d.Subject != nil && d.Subject.Start.Line == want {
					return
				}
				got = append(got, d.Error())
			}
			t.Errorf("want %q at line %d; got:\n  %s", tc.summary, want, strings.Join(got, "\n  "))
		})
	}
}

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	b, a := testBcrypt(t, "pw"), testArgon2id(t, "pw")
	users := "# submission-only logins\n\n" +
		"relay@example.com:" + a + "\n" +
		"  scanner : {BLF-CRYPT}" + b + " : scanner@example.com, @printers.example.com \n" +
		"#disabled:" + b + "\n"
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(baseConfig, `spool_dir = "var/spool"`, `spool_dir = "var/spool"
  users_file = "users"`, 1) + `
user "app@example.com" {
  password_hash = "` + b + `"
}
`
	cfg, diags := loadSrc(t, dir, src)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	if cfg.Hub.UsersFile != filepath.Join(absDir(t, dir), "users") {
		t.Errorf("UsersFile %q", cfg.Hub.UsersFile)
	}
	var logins []string
	for _, u := range cfg.Users {
		logins = append(logins, u.Login)
	}
	if !slices.Equal(logins, []string{"app@example.com", "relay@example.com", "scanner"}) {
		t.Fatalf("logins %v", logins)
	}
	if u := cfg.UserFor("scanner"); !slices.Equal(u.Senders, []string{"scanner@example.com", "@printers.example.com"}) ||
		u.PasswordHash != "{BLF-CRYPT}"+b || !strings.HasSuffix(u.Source, "users:4") {
		t.Errorf("scanner %+v", u)
	}
	if u := cfg.UserFor("relay@example.com"); u.PasswordHash != a || !slices.Equal(u.Senders, []string{"relay@example.com"}) {
		t.Errorf("relay %+v", u)
	}
	// The file is in the configuration's hash, never among the sources
	// diagnostics quote (its lines hold password hashes).
	if cfg.Files()[cfg.Hub.UsersFile] != nil {
		t.Errorf("the users file is among the quotable sources")
	}
	before := cfg.Hash()
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(users+"late@example.com:"+b+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg2, diags := loadSrc(t, dir, src); cfg2 == nil || cfg2.Hash() == before {
		t.Errorf("an edited users file keeps the hash (%v)", diags)
	}
}

// TestUsersFileErrors: every bad line is reported, each at its own line
// and column of the users file, in one load.
func TestUsersFileErrors(t *testing.T) {
	dir := t.TempDir()
	b := testBcrypt(t, "pw")
	lines := []string{
		"ok@example.com:" + b,                  // 1
		"no colon here",                        // 2: Invalid users_file line
		"scanner:" + b,                         // 3: Missing senders (col 1)
		"empty@example.com:",                   // 4: Invalid password_hash (no hash)
		"plain@example.com:hunter2",            // 5: Invalid password_hash at col 19
		"ok@example.com:" + b,                  // 6: Duplicate login (file twice)
		"alice@example.com:" + b,               // 7: Duplicate login (a mailbox)
		"x@example.com:" + b + ":a@b.c,,d@b.c", // 8: Invalid sender (empty)
		"y@example.com:" + b + ": bad addr",    // 9: Invalid sender at "bad"
		"sp ace:" + b + ":a@example.com",       // 10: Invalid login
		"blockuser@example.com:" + b,           // 11: Duplicate login (a user block)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(baseConfig, `spool_dir = "var/spool"`, `spool_dir = "var/spool"
  users_file = "users"`, 1) + `
user "blockuser@example.com" {
  password_hash = "` + b + `"
}
`
	cfg, diags := loadSrc(t, dir, src)
	if cfg != nil {
		t.Fatal("loaded a broken users file")
	}
	file := filepath.Join(absDir(t, dir), "users")
	type at struct {
		summary   string
		line, col int
	}
	want := []at{
		{"Invalid users_file line", 2, 1},
		{"Missing senders", 3, 1},
		{"Invalid password_hash", 4, 19},
		{"Invalid password_hash", 5, 19},
		{`Duplicate login "ok@example.com"`, 6, 1},
		{`Duplicate login "alice@example.com"`, 7, 1},
		{"Invalid sender", 8, 14 + len(b) + 1 + 7},
		{"Invalid sender", 9, 14 + len(b) + 3},
		{"Invalid login", 10, 1},
		{`Duplicate login "blockuser@example.com"`, 11, 1},
	}
	var got []at
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil && d.Subject.Filename == file {
			got = append(got, at{d.Summary, d.Subject.Start.Line, d.Subject.Start.Column})
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("diagnostics:\n got %v\nwant %v\nall: %v", got, want, diags)
	}
	// They render as the HCL ones do: file:line,col-range.
	var le strings.Builder
	for _, d := range diags {
		if d.Summary == "Invalid users_file line" {
			le.WriteString(d.Error())
		}
	}
	if !strings.Contains(le.String(), file+":2,1-") {
		t.Errorf("rendered %q", le.String())
	}
}

func TestUsersFileMissing(t *testing.T) {
	src := strings.Replace(baseConfig, `spool_dir = "var/spool"`, `spool_dir = "var/spool"
  users_file = "nope" # <-`, 1)
	cfg, diags := loadSrc(t, t.TempDir(), src)
	if cfg != nil || len(diags) == 0 || diags[0].Summary != "Missing users_file" || diags[0].Subject.Start.Line != markedLine(t, src) {
		t.Errorf("diags %v", diags)
	}
}
