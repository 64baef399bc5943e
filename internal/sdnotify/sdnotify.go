// Package sdnotify tells the service manager how hubd is doing, by the
// protocol of sd_notify(3): one datagram of newline-separated VAR=value
// assignments sent to the AF_UNIX datagram socket named by $NOTIFY_SOCKET
// (a path, or an abstract socket written with a leading "@").
//
// What hubd says, and when (examples/systemd/hubd.service runs it as
// Type=notify-reload):
//
//   - READY=1 with STATUS=... once the listeners are bound and the queue is
//     loaded: systemd considers the start finished only then, so units
//     ordered after hubd find port 25 open.
//   - RELOADING=1 with MONOTONIC_USEC=<CLOCK_MONOTONIC in µs> when a reload
//     begins (SIGHUP, or the admin API). systemd ≥ 253 requires the
//     timestamp for Type=notify-reload: it tells a reload that started after
//     `systemctl reload` asked for it from a stale one; without it the
//     reload job waits for a message that never comes. READY=1 follows when
//     the reload is over, applied or refused, with STATUS saying which.
//   - STOPPING=1 when shutdown begins, so systemd shows "deactivating" while
//     sessions in DATA finish.
//   - STATUS=... alone whenever there is news for `systemctl status`.
//
// Without $NOTIFY_SOCKET (hubd not started by systemd, or by a unit of
// another Type) every call does nothing and returns nil. A failure to send
// is returned for logging only: the service manager's bookkeeping must never
// stop the mail.
//
// The datagram itself is sent by github.com/coreos/go-systemd/v22/daemon,
// the library the project's reference notes name; only that package is
// used, which is the standard library plus golang.org/x/sys.
package sdnotify

import (
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends notifications to the service manager. The zero value
// and a nil *Notifier are valid and send nothing.
type Notifier struct {
	enabled bool
}

// FromEnvironment returns a Notifier that sends to $NOTIFY_SOCKET, or one
// that does nothing when it is unset. The variable is left in the
// environment: go-systemd reads it at each send.
func FromEnvironment() *Notifier {
	return &Notifier{enabled: os.Getenv("NOTIFY_SOCKET") != ""}
}

// Enabled says whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.enabled }

// Ready says that start-up, or a reload, is finished (READY=1).
func (n *Notifier) Ready(status string) error {
	return n.send(daemon.SdNotifyReady, status)
}

// Reloading says that a reload begins (RELOADING=1 and MONOTONIC_USEC, as
// Type=notify-reload requires); Ready must follow when it is over.
func (n *Notifier) Reloading(status string) error {
	if !n.Enabled() {
		return nil
	}
	return n.send(daemon.SdNotifyReloading+"\n"+strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"), status)
}

// Stopping says that shutdown begins (STOPPING=1).
func (n *Notifier) Stopping(status string) error {
	return n.send(daemon.SdNotifyStopping, status)
}

// Status sets the one-line status `systemctl status` shows (STATUS=...).
func (n *Notifier) Status(status string) error {
	return n.send("", status)
}

// send sends state and STATUS=status (when not "") in one datagram.
func (n *Notifier) send(state, status string) error {
	if !n.Enabled() {
		return nil
	}
	var fields []string
	if state != "" {
		fields = append(fields, state)
	}
	if status != "" {
		// A newline would end the assignment and start another.
		fields = append(fields, "STATUS="+strings.ReplaceAll(status, "\n", " "))
	}
	if len(fields) == 0 {
		return nil
	}
	_, err := daemon.SdNotify(false, strings.Join(fields, "\n"))
	return err
}
