package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"hubd/policy"
)

// unitFile is a systemd unit's [Service] section: each key's values in
// order (a key may be given more than once).
type unitFile map[string][]string

func parseUnit(t *testing.T, text string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit: bad line %q", line)
			}
			u[k] = append(u[k], v)
		}
	}
	return u
}

// words is every space-separated value of key.
func (u unitFile) words(key string) []string {
	var out []string
	for _, v := range u[key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// last is key's effective single value.
func (u unitFile) last(key string) string {
	if v := u[key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// unitMismatches lists where the unit would stop hubd from running on cfg:
// each directory hubd writes (and each Maildir) must be under the unit's
// StateDirectory=, LogsDirectory=, RuntimeDirectory= or ReadWritePaths=, as
// ProtectSystem=strict mounts everything else read-only.
func unitMismatches(u unitFile, cfg *policy.Config) []string {
	var writable []string
	for key, root := range map[string]string{"StateDirectory": "/var/lib", "LogsDirectory": "/var/log", "RuntimeDirectory": "/run"} {
		for _, d := range u.words(key) {
			writable = append(writable, filepath.Join(root, d))
		}
	}
	for _, p := range u.words("ReadWritePaths") {
		writable = append(writable, strings.TrimLeft(p, "-+"))
	}
	var out []string
	for _, use := range cfg.PathUses() {
		if !use.Role.CreatedDir() && use.Role != policy.PathMaildir {
			continue
		}
		under := false
		for _, w := range writable {
			if use.Dir() == w || strings.HasPrefix(use.Dir(), w+"/") {
				under = true
			}
		}
		if !under {
			out = append(out, fmt.Sprintf("%s (%s) %s is not under the unit's writable paths %v", use.Setting, use.Role, use.Dir(), writable))
		}
	}
	return out
}

// TestSystemdUnitAgreesWithProductionExample reads examples/systemd/hubd.service
// and examples/production.hcl as shipped and checks that one can run the
// other: every path hubd writes is writable in the unit's sandbox (the bug
// the first unit shipped with: the tracking log in /var/log/hubd outside
// ReadWritePaths, so `hubd run` exited 1), the unit checks and runs the
// configuration it installs, notifies, stops after shutdown_grace, and lets
// hubd give the maildrop its group.
func TestSystemdUnitAgreesWithProductionExample(t *testing.T) {
	text, err := os.ReadFile("../../examples/systemd/hubd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := parseUnit(t, string(text))
	_, cfgPath := installProduction(t)
	cfg, err := policy.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range unitMismatches(unit, cfg) {
		t.Error(m)
	}
	// The old unit's mistake is caught.
	old := parseUnit(t, regexp.MustCompile(`(?m)^LogsDirectory=.*$`).ReplaceAllString(string(text), ""))
	if m := unitMismatches(old, cfg); len(m) != 1 || !strings.Contains(m[0], "hub.tracking_log.dir") {
		t.Errorf("a unit without LogsDirectory=hubd: mismatches %q, want the tracking log", m)
	}

	const config = "-config /etc/hubd/hubd.hcl"
	if got := unit.last("ExecStart"); !regexp.MustCompile(`^/\S+/hubd run ` + config + `$`).MatchString(got) {
		t.Errorf("ExecStart=%s", got)
	}
	if got := unit.last("ExecStartPre"); !regexp.MustCompile(`^/\S+/hubd check ` + config + `$`).MatchString(got) {
		t.Errorf("ExecStartPre=%s", got)
	}
	if got := unit.last("Type"); got != "notify-reload" {
		t.Errorf("Type=%s, want notify-reload", got)
	}
	stop, err := time.ParseDuration(unit.last("TimeoutStopSec") + "s")
	if err != nil || stop <= cfg.Hub.ShutdownGrace+10*time.Second {
		t.Errorf("TimeoutStopSec=%s must exceed shutdown_grace (%v) + 10s for deliveries in flight", unit.last("TimeoutStopSec"), cfg.Hub.ShutdownGrace)
	}
	// hubd gives the maildrop to the group sendmail is setgid to; sendmail,
	// as any user, must reach it through the state directory.
	if !strings.Contains(string(mustRead(t, "../../examples/production.hcl")), `maildrop_group = "hubd-drop"`) ||
		!strings.Contains(" "+strings.Join(unit.words("SupplementaryGroups"), " ")+" ", " hubd-drop ") {
		t.Errorf("production.hcl's maildrop_group and the unit's SupplementaryGroups= (%v) must both be hubd-drop", unit.words("SupplementaryGroups"))
	}
	if m := unit.last("StateDirectoryMode"); len(m) != 4 || !strings.ContainsAny(m[3:], "1357") {
		t.Errorf("StateDirectoryMode=%s: others need x to reach the maildrop", m)
	}
	if got := unit.words("AmbientCapabilities"); strings.Join(got, " ") != "CAP_NET_BIND_SERVICE" {
		t.Errorf("AmbientCapabilities=%v", got)
	}

	drop := parseUnit(t, string(mustRead(t, "../../examples/systemd/before-253.conf")))
	if drop.last("Type") != "notify" || !strings.Contains(drop.last("ExecReload"), "kill -HUP $MAINPID") {
		t.Errorf("before-253.conf: %v", drop)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
