package sdnotify_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"hubd/internal/sdnotify"
	"hubd/internal/sdnotify/sdnotifytest"
)

func TestUnsetDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := sdnotify.FromEnvironment()
	if n.Enabled() {
		t.Fatal("enabled without NOTIFY_SOCKET")
	}
	for _, err := range []error{n.Ready("x"), n.Reloading("x"), n.Stopping("x"), n.Status("x")} {
		if err != nil {
			t.Errorf("unset NOTIFY_SOCKET: %v", err)
		}
	}
	var none *sdnotify.Notifier
	if none.Enabled() || none.Ready("x") != nil {
		t.Error("a nil Notifier must do nothing")
	}
}

func TestPathSocket(t *testing.T) {
	s := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", s.Addr)
	exchange(t, s)
}

func TestAbstractSocket(t *testing.T) {
	s := sdnotifytest.ListenAbstract(t, fmt.Sprintf("hubd-sdnotify-test-%d", os.Getpid()))
	t.Setenv("NOTIFY_SOCKET", s.Addr)
	exchange(t, s)
}

// exchange sends what hubd sends over a start, a reload and a stop, and
// checks each datagram as systemd would read it.
func exchange(t *testing.T, s *sdnotifytest.Socket) {
	n := sdnotify.FromEnvironment()
	if !n.Enabled() {
		t.Fatal("not enabled with NOTIFY_SOCKET set")
	}
	if err := n.Ready("accepting mail; 3 messages queued"); err != nil {
		t.Fatal(err)
	}
	m := s.Next(t, 5*time.Second)
	if m.Raw != "READY=1\nSTATUS=accepting mail; 3 messages queued" {
		t.Errorf("ready: %q", m.Raw)
	}

	before := monotonicUsec(t)
	if err := n.Reloading("reloading\nthe configuration"); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)
	m = s.Next(t, 5*time.Second)
	if m.Fields["RELOADING"] != "1" || m.Fields["STATUS"] != "reloading the configuration" {
		t.Errorf("reloading: %q", m.Raw)
	}
	// Type=notify-reload (systemd ≥ 253) needs CLOCK_MONOTONIC in µs, taken
	// at the reload's start.
	usec, err := strconv.ParseInt(m.Fields["MONOTONIC_USEC"], 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%q, want between %d and %d", m.Fields["MONOTONIC_USEC"], before, after)
	}

	if err := n.Status("reload applied"); err != nil {
		t.Fatal(err)
	}
	if m = s.Next(t, 5*time.Second); m.Raw != "STATUS=reload applied" {
		t.Errorf("status: %q", m.Raw)
	}
	if err := n.Stopping(""); err != nil {
		t.Fatal(err)
	}
	if m = s.Next(t, 5*time.Second); m.Raw != "STOPPING=1" {
		t.Errorf("stopping: %q", m.Raw)
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// TestSocketGone: a manager that went away is an error to log, not a panic
// or a hang.
func TestSocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", t.TempDir()+"/gone.sock")
	if err := sdnotify.FromEnvironment().Ready(""); err == nil {
		t.Error("sending to a missing socket succeeded")
	}
}
