package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPathUses: every path hubd writes or reads is listed with the
// attribute (file:line:col) that names it, or for a default with the
// attribute it derives from.
func TestPathUses(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"cert.pem", "key.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	src := `hub {
  hostname  = "h.example.com"
  spool_dir = "var/spool"
  tracking_log {
    dir = "/var/log/hubd"
  }
}
admin {
  socket = "/run/hubd/admin.sock"
}
accepted_domain "example.com" {}
mailbox "alice@example.com" {
  maildir = "mail/alice"
}
mailbox "bob@example.com" {}
mailbox "carol@example.com" { lmtp = "unix:/run/dovecot/lmtp" }
receive_connector "in" {
  bind = ["127.0.0.1:10025"]
  tls {
    cert_file      = "cert.pem"
    key_file       = "key.pem"
    client_ca_file = "ca.pem"
  }
}
`
	cfg, err := LoadBytes("p.hcl", []byte(src), dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range cfg.PathUses() {
		got = append(got, fmt.Sprintf("%s|%s|%s|%d:%d|%v|%s", u.Role, strings.TrimPrefix(u.Path, dir), u.Setting,
			u.Range.Start.Line, u.Range.Start.Column, u.Default, strings.TrimPrefix(u.Pair, dir)))
	}
	want := []string{
		"Maildir|/mail/alice|mailbox \"alice@example.com\" maildir|13:13|false|",
		"Maildir|/var/mail/bob|mailbox \"bob@example.com\" maildir|15:1|true|",
		"TLS certificate|/cert.pem|receive_connector \"in\" tls.cert_file|20:22|false|",
		"TLS private key|/key.pem|receive_connector \"in\" tls.key_file|21:22|false|/cert.pem",
		"TLS client CA certificate|/ca.pem|receive_connector \"in\" tls.client_ca_file|22:22|false|",
		"spool directory|/var/spool|hub.spool_dir|3:15|false|",
		"tracking log directory|/var/log/hubd|hub.tracking_log.dir|5:11|false|",
		"maildrop directory|/var/maildrop|hub.maildrop_dir|3:15|true|",
		"admin socket|/run/hubd/admin.sock|admin.socket|9:12|false|",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("PathUses:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, u := range cfg.PathUses() {
		if u.Range.Filename != "p.hcl" {
			t.Errorf("%s: range in %q", u.Setting, u.Range.Filename)
		}
		if u.Role == PathAdmin && u.Dir() != "/run/hubd" {
			t.Errorf("admin socket's directory %q", u.Dir())
		}
	}
}

// TestPathUsesDefaults: the defaults beside the spool point at spool_dir;
// a disabled tracking log is no path.
func TestPathUsesDefaults(t *testing.T) {
	src := "hub {\n  hostname = \"h.example.com\"\n  spool_dir = \"/srv/hubd/queue\"\n  tracking_log { enabled = false }\n}\n" +
		"receive_connector \"in\" { bind = [\"127.0.0.1:10025\"] }\n"
	cfg, err := LoadBytes("d.hcl", []byte(src), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range cfg.PathUses() {
		if !u.Role.CreatedDir() {
			t.Errorf("%s is not a directory hubd creates", u.Role)
		}
		got = append(got, fmt.Sprintf("%s=%s@%d:%d,%v", u.Setting, u.Dir(), u.Range.Start.Line, u.Range.Start.Column, u.Default))
	}
	want := "hub.spool_dir=/srv/hubd/queue@3:15,false hub.maildrop_dir=/srv/hubd/maildrop@3:15,true admin.socket=/srv/hubd@3:15,true"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
}
