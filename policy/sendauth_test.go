package policy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"hubd/internal/certgen"
)

// sendAuthDir is testDir plus password files and a second key pair.
func sendAuthDir(t *testing.T) string {
	t.Helper()
	dir := testDir(t)
	files := map[string]string{
		"relay.password":  "s3cret pass\n",
		"crlf.password":   "crlf-pass\r\n",
		"empty.password":  "",
		"nl.password":     "\n",
		"lines.password":  "one\ntwo\n",
		"bare.password":   "no-newline",
		"double.password": "twice\n\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := certgen.WriteFiles(filepath.Join(dir, "other.pem"), filepath.Join(dir, "other.key"),
		[]string{"hub.example.com"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSendAuthParsed(t *testing.T) {
	dir := sendAuthDir(t)
	cfg, diags := loadSrc(t, dir, baseConfig+`
send_connector "relay" {
  address_spaces   = ["*"]
  smart_hosts      = ["smtp.provider.example", "[192.0.2.7]:12465"]
  tls              = "implicit"
  auth {
    username      = "hub@example.com"
    password_file = "relay.password"
  }
  client_cert_file = "cert.pem"
  client_key_file  = "key.pem"
}
send_connector "login" {
  address_spaces = ["login.example"]
  smart_hosts    = ["smtp.login.example"]
  auth {
    username       = "u"
    password_file  = "crlf.password"
    mechanisms     = ["login", "Plain"]
    allow_insecure = true
  }
}
send_connector "plainport" {
  address_spaces = ["plain.example"]
  smart_hosts    = ["smtp.plain.example"]
  tls            = "none"
  auth {
    username       = "u"
    password_file  = "bare.password"
    allow_insecure = true
  }
}
`)
	if cfg == nil {
		t.Fatalf("load failed: %v", diags)
	}
	byName := map[string]SendConnector{}
	for _, sc := range cfg.SendConnectors {
		byName[sc.Name] = sc
	}
	r := byName["relay"]
	if r.TLS != SendTLSImplicit || !slices.Equal(r.SmartHosts, []string{"smtp.provider.example:465", "[192.0.2.7]:12465"}) {
		t.Errorf("relay: tls %q hosts %v, want implicit and port 465 by default", r.TLS, r.SmartHosts)
	}
	if r.Auth == nil || r.Auth.Username != "hub@example.com" || r.Auth.Password.Reveal() != "s3cret pass" ||
		!slices.Equal(r.Auth.Mechanisms, []string{"PLAIN", "LOGIN"}) || r.Auth.AllowInsecure {
		t.Errorf("relay auth = %+v (password %q)", r.Auth, r.Auth.Password.Reveal())
	}
	if r.ClientCertFile != filepath.Join(dir, "cert.pem") || r.ClientKeyFile != filepath.Join(dir, "key.pem") {
		t.Errorf("relay client cert %q %q", r.ClientCertFile, r.ClientKeyFile)
	}
	l := byName["login"]
	if l.TLS != SendTLSRequired || !slices.Equal(l.SmartHosts, []string{"smtp.login.example:25"}) ||
		!slices.Equal(l.Auth.Mechanisms, []string{"LOGIN", "PLAIN"}) || !l.Auth.AllowInsecure || l.Auth.Password.Reveal() != "crlf-pass" {
		t.Errorf("login: %+v hosts %v", l.Auth, l.SmartHosts)
	}
	if p := byName["plainport"].Auth.Password.Reveal(); p != "no-newline" {
		t.Errorf("password without newline read as %q", p)
	}
}

func TestSecretNeverShows(t *testing.T) {
	a := &SendAuth{Username: "u", Password: "hunter2", Mechanisms: []string{"PLAIN"}}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "auth", a, "pw", a.Password)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "auth", a, "pw", a.Password)
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s %q", a, a, a, a.Password, a.Password), logged.String(), string(js)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password shown: %s", s)
		}
		if !strings.Contains(s, "(redacted)") {
			t.Errorf("no (redacted) in %s", s)
		}
	}
}

// TestSendAuthDiagnostics: every rule of sendauth.go, each at its
// file:line:col (the column of the attribute's value, or of the block).
func TestSendAuthDiagnostics(t *testing.T) {
	dir := sendAuthDir(t)
	connector := func(body string) string {
		return baseConfig + "send_connector \"s\" {\n  address_spaces = [\"*\"]\n" + body + "}\n"
	}
	base := strings.Count(baseConfig, "\n") + 2 // the line after address_spaces
	cases := []struct {
		name, body string
		want       []string // "line:col summary", line relative to the body's first line (1)
	}{
		{"missing username", `  smart_hosts = ["relay.example"]
  auth {
    password_file = "relay.password"
  }
`, []string{"2:8 Missing required argument"}},
		{"missing password_file", `  smart_hosts = ["relay.example"]
  auth {
    username = "u"
  }
`, []string{"2:8 Missing required argument"}},
		{"empty username", `  smart_hosts = ["relay.example"]
  auth {
    username      = ""
    password_file = "relay.password"
  }
`, []string{"3:21 Invalid username"}},
		{"password file missing", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "nope.password"
  }
`, []string{"4:21 Missing password_file"}},
		{"password file a directory", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "."
  }
`, []string{"4:21 Missing password_file"}},
		{"password file empty", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "empty.password"
  }
`, []string{"4:21 Empty password_file"}},
		{"password file only a newline", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "nl.password"
  }
`, []string{"4:21 Empty password_file"}},
		{"password file two lines", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "lines.password"
  }
`, []string{"4:21 Invalid password_file"}},
		{"password file with two newlines", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "double.password"
  }
`, []string{"4:21 Invalid password_file"}}, // one newline is stripped, not two
		{"unknown mechanism", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "relay.password"
    mechanisms    = ["PLAIN", "CRAM-MD5"]
  }
`, []string{"5:31 Unknown SASL mechanism"}},
		{"duplicate mechanism", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "relay.password"
    mechanisms    = ["plain", "PLAIN"]
  }
`, []string{"5:31 Duplicate SASL mechanism"}},
		{"empty mechanisms", `  smart_hosts = ["relay.example"]
  auth {
    username      = "u"
    password_file = "relay.password"
    mechanisms    = []
  }
`, []string{"5:21 Empty mechanisms"}},
		{"auth over tls none", `  smart_hosts = ["relay.example"]
  tls         = "none"
  auth {
    username      = "u"
    password_file = "relay.password"
  }
`, []string{"2:17 Credentials without TLS"}},
		{"auth over opportunistic tls", `  smart_hosts = ["relay.example"]
  tls         = "opportunistic"
  auth {
    username      = "u"
    password_file = "relay.password"
  }
`, []string{"2:17 Credentials over unverified TLS"}},
		{"ca_file that is not PEM", `  smart_hosts = ["relay.example"]
  ca_file     = "relay.password"
`, []string{"2:17 Unusable ca_file"}},
		{"ca_file missing", `  smart_hosts = ["relay.example"]
  tls         = "required"
  ca_file     = "nope.pem"
`, []string{"3:17 Missing ca_file"}},
		{"ca_file without verified TLS", `  smart_hosts = ["relay.example"]
  ca_file     = "cert.pem"
`, []string{"2:17 ca_file without verified TLS"}},
		{"auth on dns routing", `  dns_routing = true
  auth {
    username      = "u"
    password_file = "relay.password"
  }
`, []string{"2:3 Credentials for smart hosts only"}},
		{"implicit on dns routing", `  dns_routing = true
  tls         = "implicit"
`, []string{"2:17 Implicit TLS needs smart hosts"}},
		{"unknown tls", `  smart_hosts = ["relay.example"]
  tls         = "starttls"
`, []string{"2:17 Invalid TLS policy"}},
		{"cert without key", `  smart_hosts      = ["relay.example"]
  client_cert_file = "cert.pem"
`, []string{"2:22 Missing client_key_file"}},
		{"key without cert", `  smart_hosts      = ["relay.example"]
  client_key_file  = "key.pem"
`, []string{"2:22 Missing client_cert_file"}},
		{"cert unreadable", `  smart_hosts      = ["relay.example"]
  client_cert_file = "missing.pem"
  client_key_file  = "key.pem"
`, []string{"2:22 Missing client_cert_file"}},
		{"mismatched pair", `  smart_hosts      = ["relay.example"]
  client_cert_file = "cert.pem"
  client_key_file  = "other.key"
`, []string{"3:22 Unusable client certificate"}},
		{"cert with tls none", `  smart_hosts      = ["relay.example"]
  tls              = "none"
  client_cert_file = "cert.pem"
  client_key_file  = "key.pem"
`, []string{"2:22 Client certificate without TLS"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, diags := loadSrc(t, dir, connector(c.body))
			var got []string
			for _, d := range diags {
				if d.Subject == nil {
					t.Errorf("diagnostic without a position: %s", d.Summary)
					continue
				}
				if d.Subject.Filename != "test.hcl" {
					t.Errorf("diagnostic in %q", d.Subject.Filename)
				}
				got = append(got, fmt.Sprintf("%d:%d %s", d.Subject.Start.Line-base, d.Subject.Start.Column, d.Summary))
				if strings.Contains(d.Detail, "s3cret") {
					t.Errorf("password in diagnostic: %s", d.Detail)
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("diagnostics %q, want %q", got, c.want)
			}
		})
	}
}

// A password file is part of the configuration hash: a new password is a
// new configuration.
func TestPasswordFileInHash(t *testing.T) {
	dir := sendAuthDir(t)
	src := baseConfig + `
send_connector "relay" {
  address_spaces = ["*"]
  smart_hosts    = ["relay.example"]
  auth {
    username      = "u"
    password_file = "relay.password"
  }
}
`
	cfg1, diags := loadSrc(t, dir, src)
	if cfg1 == nil {
		t.Fatal(diags)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay.password"), []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2, _ := loadSrc(t, dir, src)
	if cfg1.Hash() == cfg2.Hash() {
		t.Error("hash unchanged after the password changed")
	}
	if cfg2.SendConnectors[0].Auth.Password.Reveal() != "new" {
		t.Error("reload did not re-read the password file")
	}
}
