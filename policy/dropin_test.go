package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMaildropSettings(t *testing.T) {
	dir := t.TempDir()
	cfg, err := LoadBytes("a.hcl", []byte(`hub {
  hostname = "mx.example.test"
  spool_dir = "var/spool"
  maildrop_group = "64123"
}
receive_connector "in" { bind = ["127.0.0.1:0"] }`), dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hub.MaildropDir != filepath.Join(dir, "var", "maildrop") || cfg.Hub.MaildropGroup != "64123" {
		t.Errorf("maildrop %q group %q", cfg.Hub.MaildropDir, cfg.Hub.MaildropGroup)
	}
	_, err = LoadBytes("a.hcl", []byte(`hub {
  spool_dir = "var/spool"
  maildrop_group = "no-such-group-hubd"
}`), dir)
	if err == nil || !strings.Contains(err.Error(), "a.hcl:3,20-40: Unknown maildrop_group") {
		t.Errorf("unknown group: %v", err)
	}
}

// TestLoadDropIn reads the hub block alone: a receive connector whose key
// file cannot be read, and blocks it does not know, do not matter.
func TestLoadDropIn(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "hubd.hcl")
	os.WriteFile(p, []byte(`hub {
  hostname = "MX.Example.Test."
  spool_dir = "spool"
  maildrop_dir = "/var/drop"
  tracking_log { enabled = false }
}
receive_connector "x" {
  bind = ["0.0.0.0:25"]
  tls {
    key_file = "/root/unreadable.key"
  }
}
future_block "y" {}
`), 0o644)
	d, err := LoadDropIn(p)
	if err != nil {
		t.Fatal(err)
	}
	if d.Hostname != "mx.example.test" || d.SpoolDir != filepath.Join(dir, "spool") || d.MaildropDir != "/var/drop" ||
		d.AdminSocket != filepath.Join(dir, "admin.sock") {
		t.Errorf("%+v", d)
	}
	os.WriteFile(p, []byte("hub {\n hostname = \"x.test\"\n}\n"), 0o644)
	if _, err := LoadDropIn(p); err == nil || !strings.Contains(err.Error(), "no spool_dir") {
		t.Errorf("no spool_dir: %v", err)
	}
}
