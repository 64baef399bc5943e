package dkimsign

import (
	"net/mail"
	"strings"
)

// field is one header field of the section read: its name as written and
// its value unfolded (CRLFs of folding removed, RFC 5322 §2.2.3).
type field struct {
	name, value string
}

// splitFields splits a header section into fields. A line that is not a
// field and not a continuation is skipped, as verifiers skip it.
func splitFields(head []byte) []field {
	var out []field
	for line := range strings.SplitSeq(string(head), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) > 0 {
				out[len(out)-1].value += line
			}
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			continue
		}
		out = append(out, field{name: name, value: value})
	}
	return out
}

// fromDomain returns the domain of the first mailbox of a From: value
// (RFC 5322 §3.6.2, mailbox-list), or false. Values net/mail refuses (an
// unknown charset in an encoded word, sloppy quoting) are read leniently:
// the addr-spec in the last <...>, or the value itself, split at its last
// '@'. The domain is returned as written, without a trailing dot;
// policy.Config.DKIMFor normalizes and validates it.
func fromDomain(value string) (string, bool) {
	if list, err := mail.ParseAddressList(value); err == nil && len(list) > 0 {
		if at := strings.LastIndexByte(list[0].Address, '@'); at >= 0 {
			return cleanDomain(list[0].Address[at+1:])
		}
		return "", false
	}
	addr := value
	if open := strings.LastIndexByte(value, '<'); open >= 0 {
		addr = value[open+1:]
		if end := strings.IndexByte(addr, '>'); end >= 0 {
			addr = addr[:end]
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", false
	}
	d := addr[at+1:]
	if end := strings.IndexAny(d, " \t\r\n,;>()\"<"); end >= 0 {
		d = d[:end]
	}
	return cleanDomain(d)
}

func cleanDomain(d string) (string, bool) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	// An address literal has no DKIM key; anything not a host name is
	// refused here rather than looked up.
	if d == "" || strings.ContainsAny(d, "[]@<>()\",;:\\ \t\r\n") {
		return "", false
	}
	return strings.ToLower(d), true
}

// headerKeys is the h= list (RFC 6376 §3.5) for a message with fields
// present: each name of configured that the message has, as often as it
// has it, in configured order; a name configured twice or more once more
// (oversigned, §5.4.2), also when absent.
func headerKeys(configured []string, present []field) []string {
	count := map[string]int{}
	for _, f := range present {
		count[strings.ToLower(f.name)]++
	}
	listed := map[string]int{}
	for _, n := range configured {
		listed[strings.ToLower(n)]++
	}
	var keys []string
	done := map[string]bool{}
	for _, n := range configured {
		lower := strings.ToLower(n)
		if done[lower] {
			continue
		}
		done[lower] = true
		k := count[lower]
		if listed[lower] > 1 {
			k++
		}
		for range k {
			keys = append(keys, n)
		}
	}
	return keys
}
