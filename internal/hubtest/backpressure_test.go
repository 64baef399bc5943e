package hubtest

import (
	"net/smtp"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDisk is a spool filesystem whose free space the test sets.
type fakeDisk struct {
	mu   sync.Mutex
	free uint64
}

const gib = 1 << 30

func (f *fakeDisk) DiskUsage(string) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.free, 100 * gib, nil
}

func (f *fakeDisk) Memory() (uint64, uint64, error) { return 100 << 20, 16 * gib, nil }

func (f *fakeDisk) set(free uint64) {
	f.mu.Lock()
	f.free = free
	f.mu.Unlock()
}

// TestBackPressure: as the spool's filesystem fills, anonymous mail is
// refused first (Medium) while authenticated submission still flows, then
// all mail (High), each with 452 4.3.1; when space returns mail flows
// again, and every message accepted along the way is delivered.
func TestBackPressure(t *testing.T) {
	disk := &fakeDisk{free: 50 * gib}
	h := Start(t, `
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
  back_pressure {
    disk_free_high   = "1GB"
    disk_free_medium = "3GB"
  }
}
accepted_domain "example.test" {}
mailbox "alice@example.test" {
  maildir       = "{{dir}}/mail/alice"
  password_hash = "$2a$04$XGrA6JG2Vkf0nvnK45OB3eSg/cWZV/HP15Lg2e4.7A97y2vpztShO"
}
receive_connector "in" {
  bind                = ["127.0.0.1:0"]
  auth                = ["plain"]
  allow_insecure_auth = true
  tarpit_interval     = "0s"
  permissions {
    anonymous     = ["submit"]
    authenticated = ["submit", "relay"]
  }
}
`, Options{PressureProbe: disk})
	in := h.Addr(t, "in")
	auth := smtp.PlainAuth("", "alice@example.test", "secret", "127.0.0.1")
	anon := func() error {
		return smtp.SendMail(in, nil, "someone@remote.test", []string{"alice@example.test"}, []byte("Subject: anon\r\n\r\nx\r\n"))
	}
	authed := func() error {
		return smtp.SendMail(in, auth, "alice@example.test", []string{"alice@example.test"}, []byte("Subject: auth\r\n\r\nx\r\n"))
	}
	check := func(what string, err error, want string) {
		t.Helper()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: err = %v, want %q", what, err, want)
		}
	}
	check("normal, anonymous", anon(), "")

	disk.set(2 * gib) // under 3GB: medium
	h.Pressure.Check()
	check("medium, anonymous", anon(), "4.3.1 Insufficient system resources")
	check("medium, authenticated", authed(), "")

	disk.set(gib / 2) // under 1GB: high
	h.Pressure.Check()
	check("high, anonymous", anon(), "4.3.1 Insufficient system resources")
	check("high, authenticated", authed(), "4.3.1 Insufficient system resources")

	disk.set(50 * gib)
	h.Pressure.Check()
	check("recovered, anonymous", anon(), "")
	if s := h.Pressure.Status(); s.Level.String() != "normal" {
		t.Errorf("level after recovery: %v", s.Level)
	}
	// Nothing accepted was lost: three messages reached the mailbox.
	WaitMaildir(t, filepath.Join(h.Dir, "mail", "alice"), 3, 10*time.Second)
	if err := h.Transport.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}
