package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAdminBlock(t *testing.T) {
	dir := t.TempDir()
	base := "hub {\n hostname = \"h.example.com\"\n spool_dir = \"var/spool\"\n}\nreceive_connector \"in\" { bind = [\"127.0.0.1:2525\"] }\n"
	cfg, err := LoadBytes("a.hcl", []byte(base), dir)
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Admin; a.Socket != filepath.Join(dir, "var", "admin.sock") || a.SocketMode != 0o660 || a.SocketGID != -1 {
		t.Errorf("defaults: %+v", a)
	}
	os.WriteFile(filepath.Join(dir, "tok"), []byte("0123456789abcdef0123\n"), 0o600)
	cfg, err = LoadBytes("a.hcl", []byte(base+`admin {
  socket      = "run/a.sock"
  socket_mode = "0600"
  listen      = "127.0.0.1:8025"
  token_file  = "tok"
}`), dir)
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Admin; a.Socket != filepath.Join(dir, "run/a.sock") || a.SocketMode != 0o600 || a.Token != "0123456789abcdef0123" {
		t.Errorf("set: %+v", a)
	}
	for _, c := range []struct{ src, want string }{
		{`admin { socket_group = "no-such-group-hubd" }`, "Unknown socket_group"},
		{`admin { listen = "127.0.0.1:8025" }`, "Missing token_file"},
		{"admin {\n listen = \"127.0.0.1:8025\"\n token_file = \"missing\"\n}", "Unreadable token_file"},
		{`admin { socket_mode = "0444" }`, "Invalid socket_mode"},
		{"admin {\n listen = \"nohostport\"\n token_file = \"tok\"\n}", "Invalid listen"},
	} {
		_, err := LoadBytes("a.hcl", []byte(base+c.src), dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.src, err, c.want)
		}
	}
}
