package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
)

// RecordName is the DNS name of a key's record: <selector>._domainkey.<domain>
// (RFC 6376 §3.6.2.1).
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + domain
}

// TXTRecord is the key record (RFC 6376 §3.6.1) that publishes pub:
// "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>" for RSA, and for
// Ed25519 "v=DKIM1; k=ed25519; p=<base64 of the 32-byte key>" (RFC 8463
// §4.2: the raw key, not wrapped in a SubjectPublicKeyInfo).
func TXTRecord(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k), nil
	default:
		return "", fmt.Errorf("dkimsign: unsupported key type %T", pub)
	}
}

// QuoteTXT renders a TXT record's value as zone files write it: quoted
// character-strings of at most 255 octets each (RFC 1035 §3.3.14), which
// a resolver concatenates (RFC 6376 §3.6.2.2). The value holds no '"' or
// '\' (base64 and tags), so nothing is escaped.
func QuoteTXT(value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, `"`+value[:255]+`"`)
		value = value[255:]
	}
	parts = append(parts, `"`+value+`"`)
	return strings.Join(parts, " ")
}
