package main

import (
	"encoding/base64"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/policy/passhash"
)

// authReply opens a session and returns the reply to AUTH PLAIN.
func authReply(t *testing.T, addr, login, password string) string {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	c.PrintfLine("EHLO users.example.test")
	if _, _, err := c.ReadResponse(250); err != nil {
		t.Fatal(err)
	}
	c.PrintfLine("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+login+"\x00"+password)))
	code, msg, _ := c.ReadResponse(0)
	c.PrintfLine("QUIT")
	return fmt.Sprintf("%d %s", code, msg)
}

// TestSIGHUPUsersFile: hub.users_file is part of the configuration: a
// changed password works after SIGHUP, and a broken file refuses the
// reload (logged with the file's line) while the old logins stay.
func TestSIGHUPUsersFile(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	users := filepath.Join(dir, "users")
	writeUsers := func(s string) {
		if err := os.WriteFile(users, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hash := func(pw string) string {
		h, err := passhash.HashBcrypt(pw, passhash.MinBcryptCost)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	writeUsers("relay@example.test:" + hash("old pw") + "\n")
	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname   = "users.example.test"
  spool_dir  = "spool"
  users_file = "users"
}
accepted_domain "example.test" {}
receive_connector "sub" {
  bind                = [%q]
  auth                = ["plain"]
  allow_insecure_auth = true # loopback test; no TLS needed
  tarpit_interval     = "0s"
  permissions {
    anonymous     = []
    authenticated = ["submit", "relay"]
  }
}
`, addr))
	p := startHubd(t, cfg, addr)
	if r := authReply(t, addr, "relay@example.test", "old pw"); !strings.HasPrefix(r, "235 2.7.0") {
		t.Fatalf("old password before reload: %s", r)
	}

	writeUsers("# rotated\nrelay@example.test:" + hash("new pw") + "\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(p.out.String(), "configuration reloaded") },
		"the reload in the log")
	if r := authReply(t, addr, "relay@example.test", "new pw"); !strings.HasPrefix(r, "235 2.7.0") {
		t.Errorf("new password after reload: %s", r)
	}
	if r := authReply(t, addr, "relay@example.test", "old pw"); !strings.HasPrefix(r, "535 5.7.8") {
		t.Errorf("old password after reload: %s", r)
	}

	// A broken line: the reload is refused, naming the file and line, and
	// the new password stays in force.
	writeUsers("relay@example.test:" + hash("third pw") + "\nbroken line\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(p.out.String(), "reload refused") }, "reload refused in the log")
	if !strings.Contains(p.out.String(), "users line 2") {
		t.Errorf("the log lacks the users file's line:\n%s", p.out.String())
	}
	if r := authReply(t, addr, "relay@example.test", "new pw"); !strings.HasPrefix(r, "235 2.7.0") {
		t.Errorf("password after a refused reload: %s", r)
	}
	if err := p.stop(t, 30*time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}
