package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// fakeFiles is an include reader over a map of file names to contents.
func fakeFiles(files map[string]string) func(string) ([]byte, error) {
	return func(path string) ([]byte, error) {
		if s, ok := files[path]; ok {
			return []byte(s), nil
		}
		return nil, fmt.Errorf("open %s: %w", path, fs.ErrNotExist)
	}
}

// entryText renders entries as "name=t1,t2 name2=t3" with each target's
// file:line:col, so that a test sees where everything came from.
func entryText(entries []aliasesEntry) string {
	var parts []string
	for _, e := range entries {
		var ts []string
		for _, t := range e.targets {
			ts = append(ts, fmt.Sprintf("%s(%s:%d:%d)", t.text, filepath.Base(t.rng.Filename), t.rng.Start.Line, t.rng.Start.Column))
		}
		parts = append(parts, fmt.Sprintf("%s@%d=%s", e.name, e.nameRng.Start.Line, strings.Join(ts, ",")))
	}
	return strings.Join(parts, " ")
}

// diagText renders diagnostics as "line:col summary" lines.
func diagText(diags hcl.Diagnostics) string {
	var out []string
	for _, d := range diags {
		out = append(out, fmt.Sprintf("%s:%d:%d %s", filepath.Base(d.Subject.Filename), d.Subject.Start.Line, d.Subject.Start.Column, d.Summary))
	}
	return strings.Join(out, "\n")
}

func TestParseAliasesFormat(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		files     map[string]string
		want      string
	}{
		{"one", "postmaster: root\n", nil, "postmaster@1=root(aliases:1:13)"},
		{"several and addresses", "root: alice, bob@example.org,carol\n", nil,
			"root@1=alice(aliases:1:7),bob@example.org(aliases:1:14),carol(aliases:1:30)"},
		{"comments and blank lines", "# header\n\n  # indented comment\npostmaster: root\n\n# end\n", nil,
			"postmaster@4=root(aliases:4:13)"},
		{"continuation with comma", "team: alice,\n  bob,\n\tcarol\n", nil,
			"team@1=alice(aliases:1:7),bob(aliases:2:3),carol(aliases:3:2)"},
		{"continuation without comma", "team: alice\n  bob\n", nil, "team@1=alice(aliases:1:7),bob(aliases:2:3)"},
		{"comment inside a continuation", "team: alice,\n# not yet: dave\n  bob\n", nil,
			"team@1=alice(aliases:1:7),bob(aliases:3:3)"},
		{"CRLF", "a: b\r\nc: d,\r\n e\r\n", nil, "a@1=b(aliases:1:4) c@2=d(aliases:2:4),e(aliases:3:2)"},
		{"trailing comma", "a: b, c,\nd: e,,f, \n", nil, "a@1=b(aliases:1:4),c(aliases:1:7) d@2=e(aliases:2:4),f(aliases:2:7)"},
		{"tabs", "a:\tb,\tc\n", nil, "a@1=b(aliases:1:4),c(aliases:1:7)"},
		{"no final newline", "a: b", nil, "a@1=b(aliases:1:4)"},
		{"full address name", "Sales@Example.ORG: bob\n", nil, "Sales@Example.ORG@1=bob(aliases:1:20)"},
		{"quoted name and target", "\"john doe\": \"jane doe\"@example.org\n", nil,
			"\"john doe\"@1=\"jane doe\"@example.org(aliases:1:13)"},
		{"backslash", "alice: \\alice, bob\n", nil, "alice@1=alice(aliases:1:8),bob(aliases:1:16)"},
		{"space before colon", "a : b\n", nil, "a@1=b(aliases:1:5)"},
		{"include", "staff: :include:staff.list, boss\n",
			map[string]string{"/etc/mail/staff.list": "# staff\nalice, bob\n\ncarol\n"},
			"staff@1=alice(staff.list:2:1),bob(staff.list:2:8),carol(staff.list:4:1),boss(aliases:1:29)"},
		{"include absolute and nested", "x: :INCLUDE:/lists/a\n",
			map[string]string{"/lists/a": "a1\n:include:b\n", "/lists/b": "b1\r\n"},
			"x@1=a1(a:1:1),b1(b:1:1)"},
		{"include quoted", "x: \":include:/lists/a\"\n", map[string]string{"/lists/a": "a1"}, "x@1=a1(a:1:1)"},
		{"UTF-8 columns", "é: ü@例え.jp, b\n", nil, "é@1=ü@例え.jp(aliases:1:4),b(aliases:1:13)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, _, diags := parseAliases("/etc/mail/aliases", []byte(tc.src), fakeFiles(tc.files))
			if len(diags) > 0 {
				t.Fatalf("diagnostics:\n%s", diagText(diags))
			}
			if got := entryText(entries); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestParseAliasesRefusals(t *testing.T) {
	files := map[string]string{
		"/etc/mail/loop1":  ":include:loop2\n",
		"/etc/mail/loop2":  "x, :include:/etc/mail/loop1\n",
		"/etc/mail/self":   ":include:aliases\n",
		"/etc/mail/piped":  "alice\n|/bin/evil\n",
		"/etc/mail/empty":  "# nobody\n",
		"/etc/mail/deep0":  ":include:deep1",
		"/etc/mail/deep1":  ":include:deep2",
		"/etc/mail/deep2":  ":include:deep3",
		"/etc/mail/deep3":  ":include:deep4",
		"/etc/mail/deep4":  ":include:deep5",
		"/etc/mail/deep5":  ":include:deep6",
		"/etc/mail/deep6":  ":include:deep7",
		"/etc/mail/deep7":  ":include:deep8",
		"/etc/mail/deep8":  "bottom",
		"/etc/mail/deep8b": ":include:deep9",
	}
	for _, tc := range []struct {
		name, src string
		want      string // diagnostics, one a line
		entries   string // what is still parsed
	}{
		{"pipe", "ok: alice\nprocmail: |/usr/bin/procmail\n", "aliases:2:11 Pipe to a command refused", "ok@1=alice(aliases:1:5)"},
		{"quoted pipe with comma", "x: alice, \"|/bin/cmd a, b\", bob\n", "aliases:1:11 Pipe to a command refused",
			"x@1=alice(aliases:1:4),bob(aliases:1:29)"},
		{"file", "\n\nlog: /var/log/mail.copy\n", "aliases:3:6 File target refused", ""},
		{"quoted file", "log: \"/var/log/a b\"\n", "aliases:1:6 File target refused", ""},
		{"pipe on a continuation", "x: alice,\n  |/bin/cmd\n", "aliases:2:3 Pipe to a command refused", "x@1=alice(aliases:1:4)"},
		{"missing include", "x: :include:nothere\n", "aliases:1:4 Missing include file", ""},
		{"include without a path", "x: :include:\n", "aliases:1:4 Missing include file", ""},
		{"include loop", "x: :include:loop1\n", "loop2:1:4 Include loop", "x@1=x(loop2:1:1)"},
		{"include of itself", "x: :include:self\n", "self:1:1 Include loop", ""},
		{"pipe in an include", "x: :include:piped\n", "piped:2:1 Pipe to a command refused", "x@1=alice(piped:1:1)"},
		{"empty include", "x: :include:empty\n", "aliases:1:1 Empty alias", ""},
		{"include depth at the limit", "x: :include:deep1\n", "", "x@1=bottom(deep8:1:1)"},
		{"include too deep", "x: :include:deep0\n", "deep7:1:1 Includes nested too deep", ""},
		{"empty", "a:\nb: c\n", "aliases:1:1 Empty alias", "b@2=c(aliases:2:4)"},
		{"empty with commas", "a: , ,\n", "aliases:1:1 Empty alias", ""},
		{"no colon", "postmaster root\n", "aliases:1:1 Missing ':' after the alias name", ""},
		{"continuation first", "  alice\na: b\n", "aliases:1:1 Continuation line without an alias", "a@2=b(aliases:2:4)"},
		{"continuation after a bad entry", "no colon\n  alice\n", "aliases:1:1 Missing ':' after the alias name", ""},
		{"malformed name", "a b: c\n", "aliases:1:1 Malformed alias name", ""},
		{"malformed name address", "a@: c\nb@x..y: c\n", "aliases:1:1 Malformed alias name\naliases:2:1 Malformed alias name", ""},
		{"unterminated quoted name", "\"a: b\n", "aliases:1:1 Malformed alias name", ""},
		{"unterminated quoted target", "a: b, \"c\n", "aliases:1:7 Malformed alias target", "a@1=b(aliases:1:4)"},
		{"mid-line comment", "a: b # the boss\n", "aliases:1:4 Malformed alias target", ""},
		{"malformed targets", "a: b@, c@d@e, <x@y>, error:nouser\n",
			"aliases:1:4 Malformed alias target\naliases:1:8 Malformed alias target\naliases:1:15 Malformed alias target\naliases:1:22 Malformed alias target", ""},
		{"each error once, all reported", "p: |x\nf: /y\ng: ok\nh: :include:none\n",
			"aliases:1:4 Pipe to a command refused\naliases:2:4 File target refused\naliases:4:4 Missing include file", "g@3=ok(aliases:3:4)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, _, diags := parseAliases("/etc/mail/aliases", []byte(tc.src), fakeFiles(files))
			if got := diagText(diags); got != tc.want {
				t.Errorf("diagnostics:\n%s\nwant:\n%s", got, tc.want)
			}
			if got := entryText(entries); got != tc.entries {
				t.Errorf("entries: %s\nwant:    %s", got, tc.entries)
			}
		})
	}
}

// TestParseAliasesRanges: a diagnostic's range covers exactly the offending
// text, with byte offsets into its file, so that snippets highlight it.
func TestParseAliasesRanges(t *testing.T) {
	src := "# x\r\nok: a\r\nbad: b,  |/bin/cmd  , c\r\n"
	_, sources, diags := parseAliases("/a", []byte(src), fakeFiles(nil))
	if len(diags) != 1 {
		t.Fatalf("diagnostics:\n%s", diagText(diags))
	}
	r := diags[0].Subject
	if got := src[r.Start.Byte:r.End.Byte]; got != "|/bin/cmd" {
		t.Errorf("range covers %q", got)
	}
	if r.Start.Line != 3 || r.Start.Column != 10 || r.End.Column != 19 {
		t.Errorf("range %v", r)
	}
	if string(sources["/a"]) != src {
		t.Errorf("sources: %v", sources)
	}
}

func TestParseAliasesIncludeReadError(t *testing.T) {
	read := func(string) ([]byte, error) { return nil, errors.New("permission denied") }
	_, _, diags := parseAliases("/a", []byte("x: :include:/secret\n"), read)
	if len(diags) != 1 || !strings.Contains(diags[0].Detail, "permission denied") {
		t.Fatalf("diagnostics: %v", diags)
	}
}
