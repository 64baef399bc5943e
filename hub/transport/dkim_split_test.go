package transport

import "testing"

func TestSplitOwnSignatures(t *testing.T) {
	const sig1 = "DKIM-Signature: a=ed25519-sha256; d=example.test;\r\n s=ed; b=abc\r\n"
	const sig2 = "dkim-signature: a=rsa-sha256;\r\n\tb=def\r\n"
	const ar = "Authentication-Results: hub.example.test; spf=pass\r\n"
	for _, c := range []struct{ in, sigs, rest string }{
		{"", "", ""},
		{ar, "", ar},
		{sig1, sig1, ""},
		{sig1 + sig2 + ar, sig1 + sig2, ar},
		{ar + sig1, "", ar + sig1}, // not the hub's: only those at the front are
		{"DKIM-Signature:", "", "DKIM-Signature:"},
	} {
		sigs, rest := splitOwnSignatures(c.in)
		if sigs != c.sigs || rest != c.rest {
			t.Errorf("splitOwnSignatures(%q) = %q, %q; want %q, %q", c.in, sigs, rest, c.sigs, c.rest)
		}
	}
}
