package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/internal/admin"
	"hubd/internal/sdnotify/sdnotifytest"
)

// TestSystemdNotify runs hubd as systemd's Type=notify-reload does: with
// NOTIFY_SOCKET naming a datagram socket the test listens on. hubd says
// READY=1 once it listens; each reload, by SIGHUP or by the admin API, is
// RELOADING=1 with MONOTONIC_USEC and then READY=1 with a STATUS saying how
// it ended; SIGTERM is STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	dir := t.TempDir()
	addr := freePort(t)
	good := fmt.Sprintf(`
hub {
  hostname  = "notify.example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" {}
receive_connector "in" { bind = [%q] }
`, addr)
	cfg := writeConfig(t, dir, good)
	p := startWithEnv(t, hubdBinary, cfg, []string{"NOTIFY_SOCKET=" + sock.Addr}, addr)

	ready := sock.Next(t, 20*time.Second)
	if ready.Fields["READY"] != "1" || !strings.HasPrefix(ready.Fields["STATUS"], "accepting mail on 1 listeners; 0 messages queued") {
		t.Fatalf("first notification %q, want READY=1 with the status", ready.Raw)
	}

	reloadOnce := func(how string, ask func()) string {
		t.Helper()
		ask()
		m := sock.Next(t, 20*time.Second)
		usec, err := strconv.ParseInt(m.Fields["MONOTONIC_USEC"], 10, 64)
		if m.Fields["RELOADING"] != "1" || err != nil || usec <= 0 {
			t.Fatalf("%s: %q, want RELOADING=1 with MONOTONIC_USEC", how, m.Raw)
		}
		m = sock.Next(t, 20*time.Second)
		if m.Fields["READY"] != "1" {
			t.Fatalf("%s: %q after RELOADING, want READY=1", how, m.Raw)
		}
		return m.Fields["STATUS"]
	}
	sighup := func() { p.cmd.Process.Signal(syscall.SIGHUP) }

	if st := reloadOnce("SIGHUP", sighup); !strings.HasPrefix(st, "reload applied (config ") {
		t.Errorf("SIGHUP: STATUS=%q", st)
	}
	// A configuration with two errors: refused, and the status says so.
	broken := strings.Replace(good, `mailbox "alice@example.test" {}`, `mailbox "alice@example.test" { colour = "blue" }
receive_connector "in2" { bind = ["not an address"] }`, 1)
	if err := os.WriteFile(cfg, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if st := reloadOnce("SIGHUP with errors", sighup); !strings.HasPrefix(st, "reload refused: 2 errors") {
		t.Errorf("refused reload: STATUS=%q", st)
	}
	// The admin API's reload tells systemd too.
	if err := os.WriteFile(cfg, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	client := admin.NewClient(filepath.Join(dir, "admin.sock"), "")
	answered := make(chan struct{})
	st := reloadOnce("POST /v1/reload", func() {
		go func() {
			defer close(answered)
			if res, err := client.Reload(context.Background()); err != nil || !res.Applied {
				t.Errorf("admin reload: %+v %v", res, err)
			}
		}()
	})
	<-answered
	if !strings.HasPrefix(st, "reload applied") {
		t.Errorf("admin reload: STATUS=%q", st)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if m := sock.Next(t, 20*time.Second); m.Fields["STOPPING"] != "1" {
		t.Errorf("after SIGTERM: %q, want STOPPING=1", m.Raw)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("hubd exited with %v", p.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("hubd did not exit after SIGTERM")
	}
	if extra := sock.Pending(); len(extra) > 0 {
		t.Errorf("notifications after STOPPING: %v", extra)
	}
}
