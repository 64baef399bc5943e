package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"hubd/internal/admin"
	"hubd/internal/admintest"
)

// The daemon commands of hubctl, run as child processes against a real
// daemon serving the admin API on a Unix socket (internal/admintest).

var (
	daemonBinsOnce sync.Once
	daemonBinsDir  string
	daemonBinsErr  error
)

// daemonTestBinaries builds hubctl and hubd once per test binary.
func daemonTestBinaries(t *testing.T) (hubctl, hubd string) {
	t.Helper()
	daemonBinsOnce.Do(func() {
		daemonBinsDir, daemonBinsErr = os.MkdirTemp("", "hubctl-bin-")
		if daemonBinsErr != nil {
			return
		}
		for _, pkg := range []string{".", "../hubd"} {
			out, err := exec.Command("go", "build", "-o", daemonBinsDir+"/", pkg).CombinedOutput()
			if err != nil {
				daemonBinsErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if daemonBinsErr != nil {
		t.Fatal(daemonBinsErr)
	}
	return filepath.Join(daemonBinsDir, "hubctl"), filepath.Join(daemonBinsDir, "hubd")
}

// result of one command.
type result struct {
	code           int
	stdout, stderr string
}

func runBin(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

const daemonHCL = `
hub {
  hostname  = "mx.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
mailbox "bob@example.test" { maildir = "{{dir}}/mail/bob" }
receive_connector "internet" {
  bind            = ["127.0.0.1:0"]
  tarpit_interval = "0s"
}
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.2/32"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "partner" {
  address_spaces = ["partner.test"]
  smart_hosts    = ["[127.0.0.1]:9"]
}
`

// TestHubctlDaemonCommands: connector list/stop/start, status, reload
// (applied and refused), routes (the same text as `hubd routes`), track,
// config check, with tables and --json, and the exit codes 0/1/64/69.
func TestHubctlDaemonCommands(t *testing.T) {
	hubctl, hubd := daemonTestBinaries(t)
	h := admintest.Start(t, daemonHCL)
	ctl := func(args ...string) result {
		t.Helper()
		return runBin(t, hubctl, append([]string{"-socket", h.Socket}, args...)...)
	}
	expect := func(r result, code int, out, errText string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.stdout, out) || !strings.Contains(r.stderr, errText) {
			t.Errorf("exit %d, want %d; stdout %q (want %q); stderr %q (want %q)", r.code, code, r.stdout, out, r.stderr, errText)
		}
	}

	r := ctl("connector", "list")
	expect(r, 0, "NAME", "")
	if !strings.Contains(r.stdout, "apps      running") && !strings.Contains(r.stdout, "apps  ") {
		t.Errorf("connector list:\n%s", r.stdout)
	}
	expect(ctl("connector", "stop", "apps"), 0,
		"connector apps stopped (runtime override; config says enabled): gone at the next reload or restart", "")
	r = ctl("connector", "list", "--json")
	var list []admin.ConnectorInfo
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 2 ||
		list[1].State != "stopped (runtime override; config says enabled)" || !list[1].Override {
		t.Errorf("connector list --json: %v\n%s", err, r.stdout)
	}
	expect(ctl("connector", "list"), 0, "stopped (runtime override; config says enabled)", "")
	expect(ctl("connector", "stop", "apps"), 1, "", "hubctl: apps: the receive connector is already stopped")
	expect(ctl("connector", "start", "nosuch"), 1, "", `no receive connector by that name`)
	expect(ctl("connector"), 64, "", "usage: hubctl connector")
	expect(ctl("connector", "stop"), 64, "", "usage: hubctl connector")

	r = ctl("status", "--json")
	var st admin.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.PID != os.Getpid() || st.ConfigPath != h.ConfigPath ||
		len(st.Overrides) != 1 || !strings.HasPrefix(st.ConfigHash, "sha256:") {
		t.Errorf("status --json: %v\n%s", err, r.stdout)
	}
	expect(ctl("status"), 0, "overrides:     connector apps stopped (runtime override; config says enabled)", "")
	expect(ctl("config", "check", h.ConfigPath), 0, "configuration OK (2 receive connectors, 1 send connectors, 1 accepted domains, 1 mailboxes); "+st.ConfigHash, "")

	// routes: the API and `hubd routes` give the same text.
	addrs := []string{"bob@example.test", "x@partner.test", "y@elsewhere.test"}
	api := ctl(append([]string{"routes"}, addrs...)...)
	local := runBin(t, hubd, append([]string{"routes", "-config", h.ConfigPath}, addrs...)...)
	if api.code != 0 || local.code != 0 || api.stdout != local.stdout {
		t.Errorf("hubctl routes (exit %d):\n%s\nhubd routes (exit %d):\n%s", api.code, api.stdout, local.code, local.stdout)
	}
	var rep admin.RoutesReport
	if err := json.Unmarshal([]byte(ctl("routes", "--json", "x@partner.test").stdout), &rep); err != nil ||
		len(rep.Addresses) != 1 || rep.Addresses[0].Outcomes[0].NextHop != "smtp:partner[[127.0.0.1]:9]" {
		t.Errorf("routes --json: %v %+v", err, rep)
	}

	expect(ctl("track", "--since", "2h"), 0, "(no events match)", "")
	r = ctl("track", "--sender", "nobody@x.test", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("track --json: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	expect(ctl("track", "--since", "yesterday"), 64, "", "neither a duration")

	expect(ctl("reload"), 0, "reload applied; config sha256:", "")
	if !strings.Contains(ctl("reload").stdout, "no connector or listener changed") {
		t.Error("a reload of the same file reports changes")
	}
	os.WriteFile(h.ConfigPath, []byte(strings.ReplaceAll(daemonHCL, "{{dir}}", h.Dir)+"\nreceive_connector \"x\" { colour = 1 }\n"), 0o644)
	expect(ctl("reload"), 1, "", "hubctl: reload refused; the running configuration stays in force:\n  "+h.ConfigPath+":")
	r = ctl("reload", "--json")
	var rr admin.ReloadResult
	if err := json.Unmarshal([]byte(r.stdout), &rr); err != nil || r.code != 1 || rr.Applied || len(rr.Diagnostics) == 0 {
		t.Errorf("reload --json refused: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	expect(ctl("config", "check", h.ConfigPath), 1, "", "Unsupported argument")

	gone := filepath.Join(t.TempDir(), "none.sock")
	r = runBin(t, hubctl, "-socket", gone, "status")
	expect(r, 69, "", "hubctl: cannot reach hubd's admin API at "+gone+": ")
}

// TestHubctlClusterStatusLocal: `hubctl cluster status` on a single hub
// says that the queue engine is local (table and --json), and `hubctl
// status` names the engine; a wrong subcommand is a usage error.
func TestHubctlClusterStatusLocal(t *testing.T) {
	hubctl, _ := daemonTestBinaries(t)
	h := admintest.Start(t, daemonHCL)
	ctl := func(args ...string) result {
		t.Helper()
		return runBin(t, hubctl, append([]string{"-socket", h.Socket}, args...)...)
	}
	r := ctl("cluster", "status")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "queue engine: local\nthe queue engine is local: ") || r.stderr != "" {
		t.Errorf("cluster status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = ctl("cluster", "status", "--json")
	var cs admin.ClusterStatus
	if err := json.Unmarshal([]byte(r.stdout), &cs); err != nil || r.code != 0 || cs.Engine != "local" || cs.Note == "" {
		t.Errorf("cluster status --json: exit %d %v\n%s", r.code, err, r.stdout)
	}
	r = ctl("status")
	if r.code != 0 || !strings.Contains(r.stdout, "\nqueue engine:  local (this hub's spool)\n") {
		t.Errorf("status:\n%s", r.stdout)
	}
	for _, args := range [][]string{{"cluster"}, {"cluster", "show"}, {"cluster", "status", "x"}} {
		if r := ctl(args...); r.code != 64 || !strings.Contains(r.stderr, "usage: hubctl cluster status [--json]") {
			t.Errorf("%v: exit %d %q", args, r.code, r.stderr)
		}
	}
}
