package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSmarthostExample(t *testing.T) {
	out, code := runHubd(t, "check", "-config", "../../examples/smarthost.hcl")
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("hubd check examples/smarthost.hcl: exit %d\n%s", code, out)
	}
	if strings.Contains(out, "placeholder-not-a-real-password") {
		t.Errorf("the password is in the output:\n%s", out)
	}

	// Without its password file the same configuration is an error at the
	// attribute, and the output never shows a password.
	dir := t.TempDir()
	src, err := os.ReadFile("../../examples/smarthost.hcl")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "smarthost.hcl")
	if err := os.WriteFile(cfg, src, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runHubd(t, "check", "-paths=false", "-config", cfg)
	if code != 1 || !strings.Contains(out, "Missing password_file") || !strings.Contains(out, "smarthost.hcl line 37, in send_connector \"provider\"") {
		t.Fatalf("missing password file: exit %d\n%s", code, out)
	}
}
