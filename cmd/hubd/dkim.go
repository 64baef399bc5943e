package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"hubd/hub/dkimsign"
	"hubd/policy"
)

// cmdDKIM runs `hubd dkim keygen`: a new DKIM signing key written to a
// file only its owner reads (mode 0600, never over an existing file), and
// the two things an operator does with it printed: the DNS TXT record to
// publish (RFC 6376 §3.6.1; RFC 8463 §4.2 for Ed25519) and the HCL key
// block to paste into the domain's dkim block.
func cmdDKIM(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "keygen" {
		fmt.Fprintln(stderr, "usage: hubd dkim keygen -domain DOMAIN -selector SELECTOR [-algorithm rsa|ed25519] [-bits 2048] [-out FILE]")
		return 2
	}
	fset := flag.NewFlagSet("hubd dkim keygen", flag.ContinueOnError)
	fset.SetOutput(stderr)
	domain := fset.String("domain", "", "signing domain (d=), e.g. example.com")
	selector := fset.String("selector", "", "selector (s=), e.g. s2026")
	algorithm := fset.String("algorithm", "rsa", "rsa or ed25519")
	bits := fset.Int("bits", 2048, "RSA key size, 2048 to 4096 (RFC 8301 §3.2)")
	out := fset.String("out", "", "private key file (default <domain>.<selector>.key in the current directory)")
	if err := fset.Parse(args[1:]); err != nil {
		return 2
	}
	if fset.NArg() > 0 || *domain == "" || *selector == "" {
		fmt.Fprintln(stderr, "hubd dkim keygen: -domain and -selector are required, and nothing else")
		return 2
	}
	d, err := policy.NormalizeDKIMName(*domain, *selector)
	if err != nil {
		fmt.Fprintf(stderr, "hubd dkim keygen: %v\n", err)
		return 2
	}
	sel := strings.ToLower(*selector)
	var key crypto.Signer
	switch *algorithm {
	case "rsa":
		if *bits < 2048 || *bits > 4096 {
			fmt.Fprintf(stderr, "hubd dkim keygen: -bits %d: RSA keys are 2048 to 4096 bits (RFC 8301 §3.2)\n", *bits)
			return 2
		}
		key, err = rsa.GenerateKey(rand.Reader, *bits)
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		fmt.Fprintf(stderr, "hubd dkim keygen: -algorithm %q: rsa or ed25519\n", *algorithm)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "hubd dkim keygen: %v\n", err)
		return 1
	}
	path := *out
	if path == "" {
		path = d + "." + sel + ".key"
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if err := writeKey(path, key); err != nil {
		fmt.Fprintf(stderr, "hubd dkim keygen: %v\n", err)
		return 1
	}
	rec, err := dkimsign.TXTRecord(key.Public())
	if err != nil {
		fmt.Fprintf(stderr, "hubd dkim keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Wrote the private key to %s (mode 0600).\n\n", path)
	fmt.Fprintf(stdout, "Publish this DNS record before hubd signs with the key:\n\n%s. IN TXT %s\n\n",
		dkimsign.RecordName(sel, d), dkimsign.QuoteTXT(rec))
	fmt.Fprintf(stdout, "Then add the key to the dkim block of %s (hubd check reads it):\n\n", d)
	fmt.Fprintf(stdout, "dkim %q {\n  key {\n    selector = %q\n    key_file = %q\n  }\n}\n", d, sel, path)
	return 0
}

// writeKey writes key as PKCS#8 PEM to a new file of mode 0600.
func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting a key (remove it or choose -out)", path)
	}
	if err != nil {
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
