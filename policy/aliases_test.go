package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// aliasesConfig is a hub with two authoritative domains, an internal_relay
// and an external_relay one, a mailbox, a list and an HCL alias; extra is
// appended.
const aliasesConfig = `hub {
  hostname  = "mx.example.com"
  spool_dir = "var/spool"
}
accepted_domain "example.com" {}
accepted_domain "example.org" {}
accepted_domain "*.example.net" {}
accepted_domain "inside.example" { type = "internal_relay" }
accepted_domain "outside.example" { type = "external_relay" }
mailbox "alice@example.com" {}
distribution_list "team@example.com" { members = ["alice@example.com"] }
alias "hcl@example.com" { to = ["alice@example.com"] }
receive_connector "default" {
  bind = ["127.0.0.1:10025"]
}
`

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// aliasMap renders cfg's aliases as address → "to1,to2 [source]".
func aliasMap(cfg *Config) map[string]string {
	m := map[string]string{}
	for _, a := range cfg.Aliases {
		v := strings.Join(a.To, ",")
		if a.Source != "" {
			v += " [" + filepath.Base(a.Source) + "]"
		}
		m[a.Address] = v
	}
	return m
}

func TestAliasesFileLoads(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"aliases": "# system aliases\npostmaster: root\nroot: alice,\n  Bob@Partner.example\n" +
			"Sales@Example.ORG: carol\nstaff: :include:lists/staff\n",
		"lists/staff":  "alice\ndave@example.org\n",
		"etc/only-org": "abuse: alice@example.com\n",
	})
	src := aliasesConfig + `
aliases_file "aliases" {}
aliases_file "etc/only-org" { domains = ["example.org", "a.example.net", "inside.example"] }
`
	cfg, diags := loadSrc(t, dir, src)
	if diags.HasErrors() || cfg == nil {
		t.Fatalf("diagnostics:\n%s", diagText(diags))
	}
	got := aliasMap(cfg)
	want := map[string]string{
		"hcl@example.com":        "alice@example.com",
		"postmaster@example.com": "root@example.com [aliases:2]",
		"postmaster@example.org": "root@example.org [aliases:2]",
		"root@example.com":       "alice@example.com,bob@partner.example [aliases:3]",
		"root@example.org":       "alice@example.org,bob@partner.example [aliases:3]",
		"sales@example.org":      "carol@example.org [aliases:5]",
		"staff@example.com":      "alice@example.com,dave@example.org [aliases:6]",
		"staff@example.org":      "alice@example.org,dave@example.org [aliases:6]",
		"abuse@example.org":      "alice@example.com [only-org:1]",
		"abuse@a.example.net":    "alice@example.com [only-org:1]",
		"abuse@inside.example":   "alice@example.com [only-org:1]",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("aliases: %v", got)
	}
	// The categorizer's lookups see them as any alias.
	if a := cfg.AliasFor("Postmaster@Example.COM"); a == nil || a.Source != filepath.Join(dir, "aliases")+":2" {
		t.Errorf("AliasFor(postmaster) = %+v", a)
	}
	// The files are part of the configuration: in Files and in the hash.
	files := cfg.Files()
	for _, name := range []string{"aliases", "lists/staff", "etc/only-org"} {
		if files[filepath.Join(dir, name)] == nil {
			t.Errorf("Files() lacks %s: %v", name, slices.Collect(mapsKeys(files)))
		}
	}
	before := cfg.Hash()
	writeFiles(t, dir, map[string]string{"lists/staff": "alice\n"})
	cfg2, diags := loadSrc(t, dir, src)
	if diags.HasErrors() {
		t.Fatal(diagText(diags))
	}
	if cfg2.Hash() == before {
		t.Errorf("the hash did not change with an included file")
	}
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestAliasesFileErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"aliases": "postmaster: root\n" + // 1
			"hcl: alice\n" + // 2: hcl@example.com is an HCL alias
			"alice: bob\n" + // 3: a mailbox
			"Postmaster: x\n" + // 4: twice in the file
			"postmaster@example.org: y\n" + // 5: the bare name already made it
			"cron: |/usr/bin/cron-mail\n" + // 6
			"team: bob\n", // 7: a list (reported at the list)
		"bare": "nobody: x\n",
	})
	src := aliasesConfig + `
aliases_file "aliases" {}
aliases_file "missing" {}
aliases_file "bare" { domains = [] }
aliases_file "./aliases" { domains = ["example.com", "example.com", "nowhere.example", "outside.example", "bad..x"] }
`
	_, diags := loadSrc(t, dir, src)
	got := diagText(diags)
	for _, want := range []string{
		"aliases:2:1 Duplicate alias \"hcl@example.com\"",
		"aliases:3:1 Alias shadows a mailbox",
		"aliases:4:1 Duplicate alias \"Postmaster\"",
		"aliases:5:1 Duplicate alias \"postmaster@example.org\"",
		"aliases:6:7 Pipe to a command refused",
		"test.hcl:11:19 Distribution list shadows an address",
		"test.hcl:18:14 Missing aliases_file",
		"bare:1:1 Alias name without a domain",
		"test.hcl:20:1 Duplicate aliases_file \"./aliases\"",
		"test.hcl:20:54 Duplicate domain",
		"test.hcl:20:69 Domain not accepted",
		"test.hcl:20:88 Domain is external_relay",
		"test.hcl:20:107 Invalid domain",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q", want)
		}
	}
	for _, d := range diags {
		if d.Summary == "Distribution list shadows an address" && !strings.Contains(d.Detail, "aliases file at "+filepath.Join(dir, "aliases")+":7") {
			t.Errorf("the list's error does not name the aliases file line: %s", d.Detail)
		}
	}
	if t.Failed() {
		t.Logf("diagnostics:\n%s", got)
	}
}

// TestAliasesFileSnippet: `hubd check` shows an aliases file error with its
// file:line:col and the line itself, as it shows HCL errors.
func TestAliasesFileSnippet(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"aliases": "# ok\npostmaster: root\nlog: alice, /var/log/all-mail\n"})
	cfg, err := LoadBytes("test.hcl", []byte(aliasesConfig+`aliases_file "aliases" {}`+"\n"), dir)
	le, ok := err.(*LoadError)
	if cfg != nil || !ok {
		t.Fatalf("LoadBytes: %v", err)
	}
	var b bytes.Buffer
	le.Write(&b, false)
	out := b.String()
	full := filepath.Join(dir, "aliases")
	for _, want := range []string{"Error: File target refused", "on " + full + " line 3:", "3: log: alice, /var/log/all-mail"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if want := full + ":3,13-30: File target refused"; !strings.Contains(le.Error(), want) {
		t.Errorf("Error() = %q, want %q in it", le.Error(), want)
	}
}
