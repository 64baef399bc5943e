package policy

// aliases(5) files: the /etc/aliases format of Sendmail and Postfix, read as
// an optional source of aliases (the aliases_file block, aliases.go).
//
// # Format
//
//	# a comment: a line whose first non-blank character is '#'
//	postmaster: root
//	root:       alice, bob@example.org
//	team:       alice,
//	            bob            <- a line starting with blank space continues the entry
//	staff:      :include:staff.list
//
// An entry is NAME ":" TARGETS. NAME is a bare local part ("postmaster",
// `"john doe"`) or a full address ("sales@example.org"). TARGETS are
// separated by commas or by the end of a line (a continuation line may
// start a new target without a comma); a trailing comma and empty items are
// ignored, as Postfix ignores them. A '#' that is not the first character of
// a line is not a comment (aliases(5)), so "a: b # note" is a malformed
// target, reported as such. Lines end in LF or CRLF.
//
// A target is an address, a bare local part (completed with the domain of
// the alias it belongs to, see aliases.go), or ":include:PATH": the targets
// listed in the file PATH (relative to the directory of the file that names
// it), one or more a line, separated by commas, with the same comments and
// blank lines. Includes may nest up to maxAliasInclude files deep; a file
// that includes itself, directly or not, is an error. A leading backslash
// ("\alice", Sendmail's "do not expand further") is accepted and dropped:
// hubd's categorizer already delivers a target equal to the alias it
// expands to that address's mailbox (hub/categorizer).
//
// # Refused
//
// Each with a diagnostic at the file, line and column of the offending text,
// so that `hubd check` shows it with its snippet like an HCL error:
//
//   - "|command" pipes and "/path" file targets (also when quoted, as
//     `"|cmd arg"`): hubd never runs programs or appends to files on behalf
//     of an alias; deliver to a mailbox (Maildir or LMTP) instead;
//   - ":include:" of a file that cannot be read, nested too deep, or in a loop;
//   - an entry without ":", or whose targets are all empty;
//   - a continuation line before the first entry;
//   - a name or target that is not a local part or address (RFC 5321
//     §4.1.2), e.g. an unterminated quote.
//
// Duplicate names, names that are mailboxes or lists too, and the domains of
// bare names are the loader's business (aliases.go): they need the rest of
// the configuration.

import (
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// maxAliasInclude bounds :include: nesting: an aliases file including a
// file that includes another counts two.
const maxAliasInclude = 8

// aliasesEntry is one "name: targets" entry of an aliases file.
type aliasesEntry struct {
	name    string    // as written, quotes kept (`"john doe"`), a local part or an address
	nameRng hcl.Range // the name, for diagnostics
	targets []aliasTarget
}

// aliasTarget is one target, with where it was written (in the aliases file
// or in a file it includes).
type aliasTarget struct {
	text string // a local part or an address, as written, the backslash dropped
	rng  hcl.Range
}

// aliasesParser reads one aliases file and the files it includes.
type aliasesParser struct {
	read    func(path string) ([]byte, error)
	sources map[string][]byte // every file read, by the name used in ranges
	diags   hcl.Diagnostics
}

// parseAliases parses src, the aliases file named path, reading included
// files with read. It returns the entries in file order (entries with
// errors left out or partial), the sources read (path and its includes) for
// snippets, and every problem found.
func parseAliases(path string, src []byte, read func(string) ([]byte, error)) ([]aliasesEntry, map[string][]byte, hcl.Diagnostics) {
	p := &aliasesParser{read: read, sources: map[string][]byte{path: src}}
	var entries []aliasesEntry
	var cur *aliasesEntry
	finish := func() {
		if cur == nil {
			return
		}
		if len(cur.targets) > 0 {
			entries = append(entries, *cur)
		}
		cur = nil
	}
	// errorsBefore is the diagnostic count when the entry began: an entry
	// whose targets were all refused is not also "empty".
	errorsBefore := 0
	started := false // an entry line was seen, usable or not
	for _, ln := range splitLines(path, src) {
		text := ln.text
		trimmed := strings.TrimLeft(text, " \t")
		switch {
		case trimmed == "" || trimmed[0] == '#':
			continue
		case len(trimmed) < len(text): // continuation
			if !started {
				p.errorf(ln.span(0, len(text)), "Continuation line without an alias",
					"A line that starts with blank space continues the entry above it, and there is none. Remove the leading blank space.")
			}
			if cur == nil {
				continue // the entry's first line was refused; that error says enough
			}
			cur.targets = append(cur.targets, p.targets(ln, len(text)-len(trimmed), nil)...)
		default:
			p.checkEmpty(cur, errorsBefore)
			finish()
			errorsBefore = len(p.diags)
			cur, started = p.entry(ln), true
		}
	}
	p.checkEmpty(cur, errorsBefore)
	finish()
	return entries, p.sources, p.diags
}

// checkEmpty reports an entry that ended without a target, unless its
// targets were refused (that error says enough).
func (p *aliasesParser) checkEmpty(e *aliasesEntry, errorsBefore int) {
	if e == nil || len(e.targets) > 0 || len(p.diags) > errorsBefore {
		return
	}
	p.errorf(e.nameRng, "Empty alias", "Alias %q has no targets; write at least one after the ':'.", e.name)
}

// entry parses the first line of an entry: NAME ":" TARGETS. It returns nil
// when the name is unusable (the error is recorded).
func (p *aliasesParser) entry(ln physLine) *aliasesEntry {
	text := ln.text
	end := 0 // the index of the ':' ending the name
	if text[0] == '"' {
		q, ok := quotedEnd(text)
		if !ok {
			p.errorf(ln.span(0, len(text)), "Malformed alias name", "The quoted name %s has no closing quote.", text)
			return nil
		}
		end = q + strings.IndexByte(text[q:], ':')
		if end < q {
			end = -1
		}
	} else {
		end = strings.IndexByte(text, ':')
	}
	if end < 0 {
		p.errorf(ln.span(0, len(text)), "Missing ':' after the alias name",
			"An aliases file entry is NAME: TARGET, TARGET, ... (aliases(5)); this line has no ':'.")
		return nil
	}
	name := strings.TrimRight(text[:end], " \t")
	e := &aliasesEntry{name: name, nameRng: ln.span(0, len(name))}
	if !validAliasWord(name) {
		p.errorf(e.nameRng, "Malformed alias name",
			"%q is neither a local part (postmaster) nor an address (sales@example.com).", name)
		return nil
	}
	e.targets = p.targets(ln, end+1, nil)
	return e
}

// targets splits the part of ln from column index start on into targets,
// expanding :include:s; chain is the include chain that led to ln's file.
func (p *aliasesParser) targets(ln physLine, start int, chain []string) []aliasTarget {
	var out []aliasTarget
	text := ln.text
	for i := start; i <= len(text); {
		j, closed := itemEnd(text, i)
		item := text[i:j]
		lead := len(item) - len(strings.TrimLeft(item, " \t"))
		item = strings.TrimSpace(item)
		rng := ln.span(i+lead, i+lead+len(item))
		i = j + 1
		switch {
		case item == "":
			continue // a trailing comma, or ",," as Postfix allows
		case !closed:
			p.errorf(rng, "Malformed alias target", "%s has no closing quote.", item)
		default:
			out = append(out, p.target(item, rng, ln.file, chain)...)
		}
	}
	return out
}

// target checks one item and returns it, or the targets of the file it
// includes.
func (p *aliasesParser) target(item string, rng hcl.Range, file string, chain []string) []aliasTarget {
	bare := item // the text inside the quotes of a quoted item
	if len(item) >= 2 && item[0] == '"' && item[len(item)-1] == '"' {
		bare = item[1 : len(item)-1]
	}
	switch {
	case strings.HasPrefix(bare, "|"):
		p.errorf(rng, "Pipe to a command refused",
			"%s would pipe the message to a program (aliases(5) \"|command\"); hubd never runs programs for an alias. "+
				"Deliver to a mailbox (Maildir or lmtp) and run the program from there.", item)
	case strings.HasPrefix(bare, "/"):
		p.errorf(rng, "File target refused",
			"%s would append the message to a file (aliases(5) \"/path\"); hubd delivers only to mailboxes (Maildir or lmtp) "+
				"and addresses.", item)
	case len(bare) >= len(":include:") && strings.EqualFold(bare[:len(":include:")], ":include:"):
		return p.include(strings.TrimSpace(bare[len(":include:"):]), item, rng, file, chain)
	default:
		t := strings.TrimPrefix(item, `\`)
		if !validAliasWord(t) {
			detail := "%q is neither a local part (alice) nor an address (alice@example.com)."
			if strings.ContainsAny(t, " \t") {
				detail += " Separate targets with commas; '#' starts a comment only at the start of a line."
			}
			p.errorf(rng, "Malformed alias target", detail, item)
			return nil
		}
		return []aliasTarget{{text: t, rng: rng}}
	}
	return nil
}

// include reads the targets of the file at path (as written in item, at rng
// in file).
func (p *aliasesParser) include(path, item string, rng hcl.Range, file string, chain []string) []aliasTarget {
	if path == "" {
		p.errorf(rng, "Missing include file", "%s names no file; write :include:/path/to/list.", item)
		return nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(file), path)
	}
	path = filepath.Clean(path)
	chain = append(chainWith(chain, file), path)
	for _, f := range chain[:len(chain)-1] {
		if f == path {
			p.errorf(rng, "Include loop", "%s includes %s again: %s.", item, path, strings.Join(chain, " includes "))
			return nil
		}
	}
	if len(chain) > maxAliasInclude+1 {
		p.errorf(rng, "Includes nested too deep",
			"%s is nested %d files deep; :include: may nest at most %d deep.", item, len(chain)-1, maxAliasInclude)
		return nil
	}
	src, ok := p.sources[path]
	if !ok {
		var err error
		if src, err = p.read(path); err != nil {
			p.errorf(rng, "Missing include file", "%s cannot be read: %v.", item, err)
			return nil
		}
		p.sources[path] = src
	}
	var out []aliasTarget
	for _, ln := range splitLines(path, src) {
		trimmed := strings.TrimLeft(ln.text, " \t")
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		out = append(out, p.targets(ln, len(ln.text)-len(trimmed), chain)...)
	}
	return out
}

// chainWith starts the include chain at file when it is empty (the aliases
// file itself), so that loops back to it are found.
func chainWith(chain []string, file string) []string {
	if len(chain) == 0 {
		return []string{file}
	}
	return chain
}

func (p *aliasesParser) errorf(rng hcl.Range, summary, detailFormat string, args ...any) {
	p.diags = append(p.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(detailFormat, args...),
		Subject:  rng.Ptr(),
	})
}

// validAliasWord reports whether s is a local part (Dot-string or
// Quoted-string, RFC 5321 §4.1.2) or a whole address.
func validAliasWord(s string) bool {
	if s == "" {
		return false
	}
	if _, err := parseMailbox(s); err == nil && !strings.HasPrefix(s, "<") && !strings.HasPrefix(s, "@") {
		return true
	}
	if isDotString(s) {
		return true
	}
	if s[0] == '"' {
		end, _, err := scanQuoted(s)
		return err == nil && end == len(s)
	}
	return false
}

// itemEnd returns the index of the comma ending the item that starts at i
// (len(text) at the end of the line), skipping quoted strings; closed is
// false when a quote is left open.
func itemEnd(text string, i int) (end int, closed bool) {
	inQuote := false
	for ; i < len(text); i++ {
		switch c := text[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			return i, true
		}
	}
	return len(text), !inQuote
}

// quotedEnd returns the index just past the quoted string at the start of
// text.
func quotedEnd(text string) (int, bool) {
	for i := 1; i < len(text); i++ {
		switch text[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// physLine is one line of a file, without its line ending.
type physLine struct {
	file   string
	number int // 1-based
	offset int // byte offset of the line's first character in the file
	text   string
}

// splitLines splits src into lines ending in LF or CRLF (a lone CR is kept
// as text).
func splitLines(file string, src []byte) []physLine {
	var out []physLine
	s := string(src)
	for n, off := 1, 0; off < len(s); n++ {
		end := strings.IndexByte(s[off:], '\n')
		next := off + end + 1
		if end < 0 {
			end, next = len(s)-off, len(s)
		}
		text := strings.TrimSuffix(s[off:off+end], "\r")
		out = append(out, physLine{file: file, number: n, offset: off, text: text})
		off = next
	}
	return out
}

// span is the range of text[from:to] of the line; columns count
// characters, as HCL's do.
func (ln physLine) span(from, to int) hcl.Range {
	pos := func(i int) hcl.Pos {
		return hcl.Pos{Line: ln.number, Column: 1 + utf8.RuneCountInString(ln.text[:i]), Byte: ln.offset + i}
	}
	return hcl.Range{Filename: ln.file, Start: pos(from), End: pos(to)}
}
