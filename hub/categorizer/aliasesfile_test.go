package categorizer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAliasesFileExplained: aliases from an aliases(5) file resolve as HCL
// aliases do (nesting, a bare target in the alias's domain, de-duplication: alice
// once), and the explanation names the file and line of each.
func TestAliasesFileExplained(t *testing.T) {
	aliases := filepath.Join(t.TempDir(), "aliases")
	src := "postmaster: root\nroot: alice, \\bob,\n  ops\nops: alice, carol@partner.example\n"
	if err := os.WriteFile(aliases, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := load(t, directory[:strings.Index(directory, "alias ")]+fmt.Sprintf("aliases_file %q {}\n", aliases)+
		directory[strings.Index(directory, "send_connector"):])
	out := Explain(cfg, "postmaster@example.com", 10)
	if got, want := summary(out), "0:alice@example.com>maildir 0:bob@example.com>maildir 0:carol@partner.example>smtp:partner[[192.0.2.5]:25,backup.partner.example:2525]"; got != want {
		t.Fatalf("outcomes %s\nwant     %s", got, want)
	}
	want := "expanded from alias postmaster@example.com (" + aliases + ":1) > alias root@example.com (" + aliases + ":2)"
	for _, o := range out {
		if !strings.Contains(o.Why, want) {
			t.Errorf("%s: Why %q lacks %q", o.Address, o.Why, want)
		}
	}
}
