package policy

// DKIM signing configuration (RFC 6376; Ed25519 per RFC 8463): one `dkim`
// block per signing domain, each with one or more `key` blocks (two for
// dual RSA + Ed25519 signing), the header fields to sign and which mail is
// signed. Keys are read and parsed here, at Load, so that a missing,
// unreadable, weak or garbled key is a diagnostic at `hubd check` (and a
// refused reload) pointing at its key_file, never a surprise at signing
// time: a running hub signs only with keys already in memory.
//
//	dkim "example.com" {
//	  key { selector = "s2025r"  key_file = "dkim/example.com.s2025r.key" }   # RSA ≥ 2048
//	  key { selector = "s2025e"  key_file = "dkim/example.com.s2025e.key" }   # Ed25519
//	  headers = ["From", "From", "To", "Subject", ...]   # optional; a name listed twice is oversigned
//	  sign    = "submissions"                             # or "all"
//	}
//
// The signing domain of a message is chosen by its From: header field's
// domain: the block for that domain or its nearest parent (mail from
// sub.example.com is signed d=example.com, which DMARC's relaxed alignment
// accepts, RFC 7489 §3.1.1). Which mail is signed: DKIMSigns.

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// DKIMSign says which mail a dkim block signs.
type DKIMSign string

const (
	// DKIMSignSubmissions (the default): mail our own users and systems
	// send — authenticated sessions, receive connectors whose sessions may
	// relay without AUTH (a trusted range) or are externally secured, the
	// local pickup (sendmail), and mail the hub generates (DSNs). Mail
	// merely relayed for others (anonymous, from the Internet) is not
	// signed even if its From: names our domain: signing it would vouch for
	// a forgery (RFC 6376 §1.2: the signer claims responsibility).
	DKIMSignSubmissions DKIMSign = "submissions"
	// DKIMSignAll signs every message whose From: domain matches, also mail
	// relayed from anonymous sessions (a hub behind a filtering gateway
	// that has already decided what is ours).
	DKIMSignAll DKIMSign = "all"
)

// DKIMDomain is one dkim block.
type DKIMDomain struct {
	Domain  string    // the SDID, d= (RFC 6376 §3.5); lower-case A-labels
	Keys    []DKIMKey // at least one; every one signs (dual signing, RFC 8463 §4)
	Headers []string  // h= candidates in order; a name listed twice is oversigned (RFC 6376 §5.4.2)
	Sign    DKIMSign
}

// DKIMKey is one key of a dkim block, parsed at Load.
type DKIMKey struct {
	Selector  string // s= (RFC 6376 §3.1)
	KeyFile   string // absolute path, for messages
	Algorithm string // "rsa-sha256" or "ed25519-sha256" (a=; rsa-sha1 never, RFC 8301 §3.1)
	Bits      int    // the RSA modulus size; 256 for Ed25519
	Signer    crypto.Signer
}

// DefaultDKIMHeaders are the header fields signed when a dkim block has no
// headers list: RFC 6376 §5.4.1's recommended set (From, Reply-To,
// Subject, Date, To, Cc, the Resent-* fields, In-Reply-To, References, the
// List-* fields of RFC 2369/2919, List-Unsubscribe-Post which RFC 8058 §4
// requires signed), plus Message-ID and the MIME fields whose change would
// change how the body reads (MIME-Version, Content-Type,
// Content-Transfer-Encoding). Only the fields a message has are signed,
// except From, listed twice: it is oversigned (RFC 6376 §5.4.2), so a
// second From: added in transit breaks the signature instead of being
// shown to the reader. Never Received or Return-Path (trace fields, added
// and rewritten in transit, §5.4) nor X-Hubd-* (stripped by send
// connectors with the header firewall).
var DefaultDKIMHeaders = []string{
	"From", "From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe",
	"List-Post", "List-Owner", "List-Archive",
}

type dkimSchema struct {
	Domain      string          `hcl:"domain,label"`
	DomainRange hcl.Range       `hcl:"domain,label_range"`
	Keys        []dkimKeySchema `hcl:"key,block"`
	Headers     hcl.Expression  `hcl:"headers,optional"`
	Sign        *string         `hcl:"sign,optional"`
	SignRange   hcl.Range       `hcl:"sign,attr_value_range"`
	DefRange    hcl.Range       `hcl:",def_range"`
}

type dkimKeySchema struct {
	Selector      string    `hcl:"selector"`
	SelectorRange hcl.Range `hcl:"selector,attr_value_range"`
	KeyFile       string    `hcl:"key_file"`
	KeyFileRange  hcl.Range `hcl:"key_file,attr_value_range"`
	DefRange      hcl.Range `hcl:",def_range"`
}

// RSA key sizes: RFC 8301 §3.2 — signers MUST use at least 1024 bits and
// SHOULD use at least 2048 (we require it); verifiers need handle no more
// than 4096, so a larger key may not verify anywhere.
const (
	minDKIMRSABits = 2048
	maxDKIMRSABits = 4096
)

func (l *loader) buildDKIM() {
	dups := newDupCheck("dkim")
	for _, s := range l.schema.DKIM {
		domain, err := normalizeDomain(s.Domain)
		if err != nil {
			l.errorf(s.DomainRange, "Invalid DKIM domain", "The dkim block's label is the signing domain (d=): %v.", err)
			continue
		}
		if dups.seen(l, domain, s.Domain, s.DefRange) {
			continue
		}
		d := DKIMDomain{Domain: domain, Sign: DKIMSignSubmissions, Headers: DefaultDKIMHeaders}
		if s.Sign != nil {
			switch v := DKIMSign(*s.Sign); v {
			case DKIMSignSubmissions, DKIMSignAll:
				d.Sign = v
			default:
				l.errorf(s.SignRange, "Invalid sign", "sign is \"submissions\" (authenticated and trusted senders, the default) or \"all\", not %q.", *s.Sign)
			}
		}
		if items, set := l.stringList(s.Headers); set {
			d.Headers = l.dkimHeaders(items, s.Headers.Range())
		}
		if len(s.Keys) == 0 {
			l.errorf(s.DefRange, "Missing DKIM key",
				"A dkim block needs at least one key { selector = \"...\"  key_file = \"...\" }; `hubd dkim keygen` writes one.")
		}
		selectors := newDupCheck("DKIM selector")
		for _, ks := range s.Keys {
			if !validSelector(ks.Selector) {
				l.errorf(ks.SelectorRange, "Invalid DKIM selector",
					"A selector is one or more DNS labels of letters, digits and '-' (RFC 6376 §3.1), e.g. \"s2025\"; %q is not.", ks.Selector)
				continue
			}
			if selectors.seen(l, strings.ToLower(ks.Selector), ks.Selector, ks.DefRange) {
				continue
			}
			k := l.dkimKey(ks)
			if k.Signer != nil {
				d.Keys = append(d.Keys, k)
			}
		}
		l.cfg.DKIM = append(l.cfg.DKIM, d)
	}
}

// dkimHeaders checks a headers list: field names (RFC 5322 §3.6.8), From
// among them (RFC 6376 §5.4: it MUST be signed), and none that change in
// transit.
func (l *loader) dkimHeaders(items []listItem, whole hcl.Range) []string {
	var out []string
	from := false
	for _, it := range items {
		name := it.val
		lower := strings.ToLower(name)
		switch {
		case !validFieldName(name):
			l.errorf(it.rng, "Invalid header field name", "%q is not a header field name (printable ASCII, no ':' or space).", name)
			continue
		case lower == "received" || lower == "return-path":
			l.errorf(it.rng, "Header field not signable", "%s is a trace field, added and rewritten in transit (RFC 6376 §5.4); signing it breaks the signature.", name)
			continue
		case strings.HasPrefix(lower, "x-hubd-"):
			l.errorf(it.rng, "Header field not signable", "%s is a hub-internal field that send connectors strip (the header firewall); signing it breaks the signature.", name)
			continue
		case lower == "dkim-signature":
			l.errorf(it.rng, "Header field not signable", "DKIM-Signature fields are not signed by another signature here.")
			continue
		}
		from = from || lower == "from"
		out = append(out, name)
	}
	if !from {
		l.errorf(whole, "From not signed", "headers must include \"From\" (RFC 6376 §5.4); list it twice to oversign it.")
	}
	return out
}

// dkimKey reads and checks one key file; Signer is nil after an error.
func (l *loader) dkimKey(s dkimKeySchema) DKIMKey {
	k := DKIMKey{Selector: strings.ToLower(s.Selector), KeyFile: l.path(s.KeyFile, s.KeyFileRange)}
	if strings.TrimSpace(s.KeyFile) == "" {
		l.errorf(s.KeyFileRange, "Invalid key_file", "key_file must name the PEM file of the private key.")
		return k
	}
	pemBytes, err := os.ReadFile(k.KeyFile)
	if err != nil {
		l.errorf(s.KeyFileRange, "Unreadable DKIM key", "key_file %q (resolved to %s) cannot be read: %v.", s.KeyFile, k.KeyFile, err)
		return k
	}
	l.hashOnly(k.KeyFile, pemBytes) // a new key is a new configuration
	signer, err := ParseDKIMKey(pemBytes)
	if err != nil {
		l.errorf(s.KeyFileRange, "Unusable DKIM key", "key_file %q (resolved to %s): %v.", s.KeyFile, k.KeyFile, err)
		return k
	}
	switch pub := signer.Public().(type) {
	case *rsa.PublicKey:
		k.Algorithm, k.Bits = "rsa-sha256", pub.N.BitLen()
		if k.Bits < minDKIMRSABits || k.Bits > maxDKIMRSABits {
			l.errorf(s.KeyFileRange, "Weak DKIM key", "key_file %q is a %d-bit RSA key; use %d to %d bits (RFC 8301 §3.2: sign with at least 2048, verifiers need handle no more than 4096), or Ed25519.",
				s.KeyFile, k.Bits, minDKIMRSABits, maxDKIMRSABits)
			return k
		}
	case ed25519.PublicKey:
		k.Algorithm, k.Bits = "ed25519-sha256", 256
	}
	k.Signer = signer
	return k
}

// ParseDKIMKey parses a PEM private key: PKCS#8 ("PRIVATE KEY", RSA or
// Ed25519) or PKCS#1 ("RSA PRIVATE KEY"). Encrypted keys are refused: a
// daemon has nobody to ask for the passphrase.
func ParseDKIMKey(pemBytes []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("no PEM block found (expected -----BEGIN PRIVATE KEY-----)")
	}
	if more, _ := pem.Decode(rest); more != nil {
		return nil, fmt.Errorf("more than one PEM block; the file must hold only the private key")
	}
	if _, ok := block.Headers["DEK-Info"]; ok || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, fmt.Errorf("the key is encrypted; store it unencrypted with mode 0600")
	}
	switch block.Type {
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a PKCS#8 private key: %v", err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("a %T key; DKIM signs with RSA (RFC 6376 §3.3) or Ed25519 (RFC 8463)", key)
		}
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a PKCS#1 RSA private key: %v", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("a PEM block of type %q; expected \"PRIVATE KEY\" (PKCS#8) or \"RSA PRIVATE KEY\" (PKCS#1)", block.Type)
	}
}

// validSelector: dot-separated labels of letters, digits and hyphens
// (RFC 6376 §3.1 selectors are sub-domains).
func validSelector(s string) bool {
	if s == "" || len(s) > 63*4 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validFieldName: RFC 5322 §3.6.8 ftext, printable US-ASCII except ':'.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// DKIMFor returns the dkim block for domain (a From: header's domain) or
// its nearest parent, or nil. domain may be in U-labels or any case.
func (c *Config) DKIMFor(domain string) *DKIMDomain {
	if len(c.DKIM) == 0 {
		return nil
	}
	d, err := normalizeDomain(strings.TrimSuffix(domain, "."))
	if err != nil {
		return nil
	}
	for {
		for i := range c.DKIM {
			if c.DKIM[i].Domain == d {
				if len(c.DKIM[i].Keys) == 0 {
					return nil
				}
				return &c.DKIM[i]
			}
		}
		_, parent, ok := strings.Cut(d, ".")
		if !ok || !strings.Contains(parent, ".") {
			return nil // never a top-level domain alone
		}
		d = parent
	}
}

// DKIMSigns reports whether d signs a message that arrived through the
// named receive connector, authenticated (AUTH succeeded) or not. With
// sign = "submissions": authenticated sessions; connectors whose sessions
// may relay without AUTH (anonymous relay right: a trusted range) or are
// externally secured; and, when no receive connector has that name, the
// hub's own sources "hub" (DSNs) and "pickup" (the local sendmail).
func (c *Config) DKIMSigns(d *DKIMDomain, connector string, authenticated bool) bool {
	if d.Sign == DKIMSignAll || authenticated {
		return true
	}
	for i := range c.ReceiveConnectors {
		rc := &c.ReceiveConnectors[i]
		if rc.Name == connector {
			return rc.ExternallySecured || rc.Permissions.Anonymous.Has(RightRelay)
		}
	}
	return connector == "hub" || connector == "pickup"
}

// NormalizeDKIMName checks a signing domain and a selector as a dkim block
// does and returns the domain as d= carries it (for `hubd dkim keygen`).
func NormalizeDKIMName(domain, selector string) (string, error) {
	d, err := normalizeDomain(strings.TrimSuffix(domain, "."))
	if err != nil {
		return "", err
	}
	if !validSelector(selector) {
		return "", fmt.Errorf("selector %q is not one or more DNS labels of letters, digits and '-' (RFC 6376 §3.1)", selector)
	}
	return d, nil
}
