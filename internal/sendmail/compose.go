package sendmail

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/mail"
	"strings"

	"hubd/internal/maildrop"
	"hubd/policy"
)

// maxHeader bounds the header section sendmail holds in memory (the
// message package's cap: hubd would refuse more).
const maxHeader = 1 << 20

// field is one header field as read: its name and its raw lines (the first
// with "Name:", then continuation lines), without line endings.
type field struct {
	name  string
	lines [][]byte
}

func (f field) value() string {
	var b strings.Builder
	for i, l := range f.lines {
		if i == 0 {
			_, v, _ := bytes.Cut(l, []byte(":"))
			b.Write(v)
		} else {
			b.Write(l) // unfold: drop the line break, keep the whitespace (RFC 5322 §2.2.3)
		}
	}
	return strings.TrimSpace(b.String())
}

// composer turns the input into the maildrop file: the header section is
// read and checked first (recipients with -t, Bcc removed, From: added),
// then the body streams through.
type composer struct {
	in       *lineReader
	extract  bool
	hostname string
	from     string // the From: field to add when missing
	first    []byte // the body's first line, read while looking for the header's end
	hasFirst bool
}

// readHeader reads the header section. It ends at an empty line or at the
// end of input. A first line that is not a header field means the message
// has no header section (it is all body, as Postfix takes it); a line that
// is not a field after fields have started is a broken header section.
func (c *composer) readHeader() ([]field, error) {
	var fields []field
	size := 0
	for n := 1; ; n++ {
		line, err := c.in.next()
		if err == io.EOF {
			return fields, nil
		}
		if err != nil {
			return nil, fail(ExTempFail, "reading the message: %v", err)
		}
		size += len(line) + 2
		if size > maxHeader {
			return nil, fail(ExDataErr, "the header section is larger than %d bytes", maxHeader)
		}
		switch {
		case len(line) == 0:
			return fields, nil
		case line[0] == ' ' || line[0] == '\t':
			if len(fields) == 0 {
				return nil, fail(ExDataErr, "line %d: the message starts with a continuation line (white space before any header field)", n)
			}
			fields[len(fields)-1].lines = append(fields[len(fields)-1].lines, line)
		default:
			name, ok := fieldName(line)
			if !ok {
				if len(fields) == 0 {
					c.first, c.hasFirst = line, true
					return nil, nil
				}
				return nil, fail(ExDataErr, "line %d: %q is not a header field (\"Name: value\"); end the header section with an empty line", n, truncate(line))
			}
			fields = append(fields, field{name: name, lines: [][]byte{line}})
		}
	}
}

// fieldName returns the name of a field line: printable ASCII but ':'
// (RFC 5322 §2.2), white space before the colon allowed (obs-optional).
func fieldName(line []byte) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return "", false
	}
	for _, c := range name {
		if c < '!' || c > '~' {
			return "", false
		}
	}
	return string(name), true
}

func truncate(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}

// recipientsFrom returns the recipients of the header section for -t: To,
// Cc and Bcc, or Resent-To, Resent-Cc and Resent-Bcc when any Resent- field
// is present (RFC 5322 §3.6.6: the resent block describes the latest
// submission).
func (c *composer) recipientsFrom(fields []field) ([]string, error) {
	names := []string{"to", "cc", "bcc"}
	for _, f := range fields {
		if strings.HasPrefix(strings.ToLower(f.name), "resent-") {
			names = []string{"resent-to", "resent-cc", "resent-bcc"}
			break
		}
	}
	var out []string
	for _, f := range fields {
		for _, n := range names {
			if strings.EqualFold(f.name, n) {
				list, err := parseAddressList(f.value(), c.hostname)
				if err != nil {
					return nil, fail(ExNoUser, "%s: %v", f.name, err)
				}
				out = append(out, list...)
			}
		}
	}
	return out, nil
}

// drop reads the message and writes it to the maildrop dir.
func (c *composer) drop(dir string, env maildrop.Envelope, rcpts, notify []string) (string, error) {
	fields, err := c.readHeader()
	if err != nil {
		return "", err
	}
	if c.extract {
		more, err := c.recipientsFrom(fields)
		if err != nil {
			return "", err
		}
		rcpts = append(rcpts, more...)
	}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, maildrop.Recipient{Address: r, Notify: notify})
	}
	return c.write(dir, env, fields)
}

// dropEnvelope is drop for a complete envelope (-bs).
func (c *composer) dropEnvelope(dir string, env maildrop.Envelope) (string, error) {
	fields, err := c.readHeader()
	if err != nil {
		return "", err
	}
	return c.write(dir, env, fields)
}

// write de-duplicates the recipients and writes the file.
func (c *composer) write(dir string, env maildrop.Envelope, fields []field) (string, error) {
	seen := map[string]bool{}
	rcpts := env.Recipients
	env.Recipients = nil
	for _, r := range rcpts {
		if k := strings.ToLower(r.Address); !seen[k] {
			seen[k] = true
			env.Recipients = append(env.Recipients, r)
		}
	}
	if len(env.Recipients) == 0 {
		return "", fail(ExDataErr, "no recipients found (none given as arguments, and no To:, Cc: or Bcc: field with -t)")
	}
	d, err := maildrop.Create(dir, env)
	if err != nil {
		return "", dropError(dir, err)
	}
	if err := c.writeContent(d, fields); err != nil {
		d.Abort()
		return "", err
	}
	id, err := d.Commit()
	if err != nil {
		return "", dropError(dir, err)
	}
	return string(id), nil
}

// writeContent writes the header section (Bcc removed, From: added when missing)
// and streams the body, all with CRLF line endings.
func (c *composer) writeContent(d *maildrop.Draft, fields []field) error {
	w := bufio.NewWriterSize(d, 32<<10)
	hasFrom := false
	for _, f := range fields {
		n := strings.ToLower(f.name)
		if n == "bcc" || n == "resent-bcc" {
			continue // RFC 5322 §3.6.3: the blind copies are not shown
		}
		hasFrom = hasFrom || n == "from"
		for _, l := range f.lines {
			w.Write(l)
			w.WriteString("\r\n")
		}
	}
	if !hasFrom {
		w.WriteString("From: " + c.from + "\r\n") // RFC 5322 §3.6: From: is required
	}
	w.WriteString("\r\n")
	if c.hasFirst {
		w.Write(c.first)
		w.WriteString("\r\n")
	}
	for {
		line, err := c.in.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(ExTempFail, "reading the message: %v", err)
		}
		w.Write(line)
		if _, err := w.WriteString("\r\n"); err != nil {
			return dropError(d.Dir(), err)
		}
	}
	if err := w.Flush(); err != nil {
		return dropError(d.Dir(), err)
	}
	return nil
}

// fromField is the From: field added to a message without one: the full
// name (-F, else the user's GECOS name when the sender is the user's own
// address) and the envelope sender (the user's address for the null sender).
func fromField(sender string, inv invocation, fullName string) string {
	if sender == "" {
		sender = inv.address
	}
	if fullName == "" && sender == inv.address {
		fullName = inv.fullName
	}
	if fullName == "" {
		return sender
	}
	return (&mail.Address{Name: fullName, Address: sender}).String()
}

// envelopeAddress checks one address given on the command line: angle
// brackets are allowed, a bare name gets "@"+hostname, and with nullOK
// "" and "<>" are the null sender.
func envelopeAddress(a, hostname string, nullOK bool) (string, error) {
	a = strings.TrimSpace(a)
	if nullOK && (a == "" || a == "<>") {
		return "", nil
	}
	if strings.HasPrefix(a, "<") && strings.HasSuffix(a, ">") {
		a = a[1 : len(a)-1]
	}
	if a == "" {
		return "", fmt.Errorf("empty address")
	}
	if !strings.Contains(a, "@") {
		a += "@" + hostname
	}
	if _, _, err := policy.SplitAddress(a); err != nil {
		return "", err
	}
	return a, nil
}

// parseAddressList reads an address list as found in To: or on the command
// line ("a@b, Name <c@d>, root"). RFC 5322 syntax first (groups, quoted
// names, encoded words); if that fails, a lenient split on commas, since
// cron and scripts write bare local names (RFC 5322 wants a domain).
func parseAddressList(s, hostname string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []string
	if list, err := (&mail.AddressParser{}).ParseList(s); err == nil {
		for _, a := range list {
			addr, err := envelopeAddress(a.Address, hostname, false)
			if err != nil {
				return nil, fmt.Errorf("%q: %v", a.Address, err)
			}
			out = append(out, addr)
		}
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if i := strings.LastIndexByte(part, '<'); i >= 0 {
			if j := strings.IndexByte(part[i:], '>'); j > 0 {
				part = part[i+1 : i+j]
			}
		}
		if part == "" {
			continue
		}
		addr, err := envelopeAddress(part, hostname, false)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", part, err)
		}
		out = append(out, addr)
	}
	return out, nil
}
