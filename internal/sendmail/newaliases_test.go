package sendmail

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"hubd/internal/admin"
)

// newaliasesConfig is a valid configuration with an aliases file, its admin
// socket in dir.
func newaliasesConfig(t *testing.T, dir, aliases string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "aliases"), []byte(aliases), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "hubd.hcl")
	src := `hub {
  hostname  = "mx.example.test"
  spool_dir = "spool"
}
admin { socket = "admin.sock" }
accepted_domain "example.test" {}
mailbox "alice@example.test" {}
receive_connector "in" { bind = ["127.0.0.1:0"] }
aliases_file "aliases" {}
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serveReload answers POST /v1/reload on dir/admin.sock with status and
// body, counting the calls.
func serveReload(t *testing.T, dir string, status int, body any) *atomic.Int32 {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(dir, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	calls := new(atomic.Int32)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return calls
}

func runNewaliasesMain(t *testing.T, argv0 string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(argv0, args, IO{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv: func(string) string { return "" }})
	return code, stdout.String(), stderr.String()
}

func TestNewaliasesReloads(t *testing.T) {
	dir := t.TempDir()
	cfg := newaliasesConfig(t, dir, "postmaster: alice\nabuse: alice\n")
	calls := serveReload(t, dir, 200, admin.ReloadResult{Applied: true, ConfigHash: "sha256:abc"})
	for _, argv := range [][]string{{"newaliases", "-C", cfg}, {"hubd", "newaliases", "-config", cfg},
		{"sendmail", "-bi", "-C", cfg}, {"sendmail", "-I", "-C" + cfg}} {
		var code int
		var stdout, stderr string
		if argv[0] == "hubd" {
			code, stdout, stderr = runNewaliasesMain(t, argv[1], argv[2:]...)
		} else {
			code, stdout, stderr = runNewaliasesMain(t, argv[0], argv[1:]...)
		}
		if code != 0 || !strings.Contains(stdout, "2 aliases from aliases files; hubd reloaded it (config sha256:abc)") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", argv, code, stdout, stderr)
		}
		// The hash differs from the file's: the operator is told.
		if !strings.Contains(stderr, "is not the one checked here") {
			t.Errorf("%v: stderr %q lacks the note on another configuration", argv, stderr)
		}
	}
	if calls.Load() != 4 {
		t.Errorf("%d reloads, want 4", calls.Load())
	}
}

func TestNewaliasesRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := newaliasesConfig(t, dir, "postmaster: alice\n")
	serveReload(t, dir, 200, admin.ReloadResult{Diagnostics: []string{"/etc/aliases:3:5: error: Pipe to a command refused"}})
	code, stdout, stderr := runNewaliasesMain(t, "newaliases", "-C", cfg)
	if code != ExConfig || stdout != "" || !strings.Contains(stderr, "hubd refused the configuration") ||
		!strings.Contains(stderr, "  /etc/aliases:3:5: error: Pipe to a command refused") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestNewaliasesAPIError(t *testing.T) {
	dir := t.TempDir()
	cfg := newaliasesConfig(t, dir, "postmaster: alice\n")
	serveReload(t, dir, 500, admin.Error{Error: "reload: the daemon was started without a configuration path"})
	code, _, stderr := runNewaliasesMain(t, "newaliases", "-C", cfg)
	if code != ExUnavailable || !strings.Contains(stderr, "started without a configuration path") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// TestNewaliasesBrokenFile: every error, with file:line and snippet, exit
// 78, and no reload asked for.
func TestNewaliasesBrokenFile(t *testing.T) {
	dir := t.TempDir()
	cfg := newaliasesConfig(t, dir, "postmaster: alice\nlog: /var/log/mail\nx: |cmd\n")
	calls := serveReload(t, dir, 200, admin.ReloadResult{Applied: true})
	code, stdout, stderr := runNewaliasesMain(t, "newaliases", "-C", cfg)
	aliases := filepath.Join(dir, "aliases")
	for _, want := range []string{"Error: File target refused", "on " + aliases + " line 2:", "2: log: /var/log/mail",
		"Error: Pipe to a command refused", "on " + aliases + " line 3:", "newaliases: " + cfg + ": 2 errors (at " + aliases + ":2:6, " + aliases + ":3:4); nothing was reloaded\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if code != ExConfig || stdout != "" || calls.Load() != 0 {
		t.Errorf("exit %d, stdout %q, %d reloads; stderr:\n%s", code, stdout, calls.Load(), stderr)
	}
}

// TestNewaliasesHubdDown: no socket, or a socket nobody listens on (hubd
// was killed): the configuration is checked and the aliases wait for the
// start.
func TestNewaliasesHubdDown(t *testing.T) {
	dir := t.TempDir()
	cfg := newaliasesConfig(t, dir, "postmaster: alice\n")
	const msg = "hubd is not running; the aliases will be read when it starts\n"
	code, stdout, stderr := runNewaliasesMain(t, "newaliases", "-C", cfg)
	if code != 0 || !strings.HasSuffix(stdout, msg) || stderr != "" {
		t.Errorf("no socket: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	code, stdout, stderr = runNewaliasesMain(t, "newaliases", "-C", cfg)
	if code != 0 || !strings.HasSuffix(stdout, msg) || stderr != "" {
		t.Errorf("stale socket: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestNewaliasesNoPermission: a socket we may not connect to is 77, not
// "not running". (As root the permission is not checked: cmd/hubd's end to
// end test runs it as nobody.)
func TestNewaliasesNoPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may connect to any socket; TestNewaliasesEndToEnd covers this as nobody")
	}
	dir := t.TempDir()
	cfg := newaliasesConfig(t, dir, "postmaster: alice\n")
	serveReload(t, dir, 200, admin.ReloadResult{Applied: true})
	if err := os.Chmod(filepath.Join(dir, "admin.sock"), 0); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runNewaliasesMain(t, "newaliases", "-C", cfg)
	if code != ExNoPerm || !strings.Contains(stderr, "permission denied") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestNewaliasesUsage(t *testing.T) {
	code, _, stderr := runNewaliasesMain(t, "newaliases", "-x")
	if code != ExUsage || !strings.Contains(stderr, "usage: newaliases") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runNewaliasesMain(t, "newaliases", "-C", filepath.Join(t.TempDir(), "none.hcl"))
	if code != ExConfig || !strings.Contains(stderr, "cannot read the configuration") {
		t.Errorf("missing config: exit %d, stderr %q", code, stderr)
	}
}
