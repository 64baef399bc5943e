package connectors

import (
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"hubd/policy"
)

// sharedBindHCL: "apps" serves 127.0.0.2 more specifically than
// "internet" on the same bind; "solo" is alone on its bind; "off" is
// disabled by the config.
const sharedBindHCL = `
receive_connector "internet" {
  bind            = ["127.0.0.1:0"]
  tarpit_interval = "0s"
}
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.2/32"]
  tarpit_interval  = "0s"
  permissions { anonymous = ["submit", "relay"] }
}
receive_connector "solo" {
  bind            = ["127.0.0.3:0"]
  tarpit_interval = "0s"
}
receive_connector "off" {
  enabled = false
  bind    = ["127.0.0.4:0"]
}
`

func stateOf(t *testing.T, svc *Service, name string) ConnectorState {
	t.Helper()
	for _, st := range svc.Connectors() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no connector %q in %+v", name, svc.Connectors())
	return ConnectorState{}
}

// TestStopConnectorSharedBind: a stopped connector that shares its bind
// refuses the peers that would pick it with 421 4.3.2 and closes; it never
// hands them to the less specific connector; its open session finishes;
// start ends the override.
func TestStopConnectorSharedBind(t *testing.T) {
	h := start(t, sharedBindHCL)
	const bind = "127.0.0.1:0"
	open, greet := h.dial(bind, "127.0.0.2")
	if greet[:4] != "220 " {
		t.Fatalf("greeting %q", greet)
	}
	open.expect("EHLO apps.test", "250")

	closed, err := h.svc.StopConnector("apps")
	if err != nil || len(closed) != 0 {
		t.Fatalf("stop apps: closed %v, %v (the bind is shared: nothing to close)", closed, err)
	}
	c, reply := h.dial(bind, "127.0.0.2")
	if want := "421 4.3.2 mx.test Service not available, closing transmission channel"; reply != want {
		t.Fatalf("a peer of the stopped connector got %q, want %q", reply, want)
	}
	if !c.closed() {
		t.Error("the connection stays open after the 421")
	}
	other, reply := h.dial(bind, "127.0.0.1")
	if reply[:4] != "220 " {
		t.Fatalf("the running connector of the same bind: %q", reply)
	}
	other.expect("QUIT", "221")
	// The session opened before the stop finishes, relay right included.
	if r := open.send("app@example.com", []string{"x@remote.test"}, "Subject: t\r\n\r\nhi\r\n"); r[:4] != "250 " {
		t.Errorf("the open session of the stopped connector: %q", r)
	}
	st := stateOf(t, h.svc, "apps")
	if !st.Stopped || st.State != StateStopped || !st.Enabled || st.Accepted != 1 || st.Refused != 1 || st.Sessions != 1 {
		t.Errorf("apps while stopped: %+v", st)
	}
	if got := h.svc.Stopped(); !slices.Equal(got, []string{"apps"}) {
		t.Errorf("Stopped() = %v", got)
	}
	if _, err := h.svc.StopConnector("apps"); !errors.Is(err, ErrConnectorStopped) {
		t.Errorf("stop twice: %v", err)
	}

	if _, err := h.svc.StartConnector("apps"); err != nil {
		t.Fatal(err)
	}
	c, reply = h.dial(bind, "127.0.0.2")
	if reply[:4] != "220 " {
		t.Fatalf("after start: %q", reply)
	}
	c.expect("QUIT", "221")
	if st := stateOf(t, h.svc, "apps"); st.Stopped || st.State != StateRunning {
		t.Errorf("apps after start: %+v", st)
	}
	if _, err := h.svc.StartConnector("apps"); !errors.Is(err, ErrConnectorRunning) {
		t.Errorf("start a running connector: %v", err)
	}
	if _, err := h.svc.StartConnector("off"); !errors.Is(err, ErrDisabledByConfig) {
		t.Errorf("start a connector the config disables: %v", err)
	}
	if st := stateOf(t, h.svc, "off"); st.State != StateDisabled || st.Enabled {
		t.Errorf("off: %+v", st)
	}
	if _, err := h.svc.StopConnector("nosuch"); !errors.Is(err, ErrUnknownConnector) {
		t.Errorf("stop an unknown connector: %v", err)
	}
}

// TestStopConnectorAloneClosesListener: a connector alone on its bind
// closes the listener when stopped and listens on the same address when
// started; a reload ends the override.
func TestStopConnectorAloneClosesListener(t *testing.T) {
	h := start(t, sharedBindHCL)
	const bind = "127.0.0.3:0"
	addr := h.addr(bind)
	closed, err := h.svc.StopConnector("solo")
	if err != nil || !slices.Equal(closed, []string{bind}) {
		t.Fatalf("stop solo: closed %v, %v", closed, err)
	}
	if _, ok := h.svc.Addrs()[bind]; ok {
		t.Error("the listener of a stopped connector alone on its bind is still open")
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("%s accepts connections while solo is stopped", addr)
	}
	opened, err := h.svc.StartConnector("solo")
	if err != nil || !slices.Equal(opened, []string{bind}) {
		t.Fatalf("start solo: opened %v, %v", opened, err)
	}
	if got := h.addr(bind); got != addr {
		t.Errorf("solo listens on %s after start, was %s", got, addr)
	}
	c, reply := h.dial(bind, "")
	if reply[:4] != "220 " {
		t.Fatalf("after start: %q", reply)
	}
	c.expect("QUIT", "221")

	// A reload drops the override: the config is the truth.
	if _, err := h.svc.StopConnector("solo"); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.LoadBytes(filepath.Join(h.dir, "hubd.hcl"), []byte(baseHCL(t, h.dir)+sharedBindHCL), h.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if len(h.svc.Stopped()) != 0 || stateOf(t, h.svc, "solo").State != StateRunning {
		t.Errorf("after reload: stopped %v, solo %+v", h.svc.Stopped(), stateOf(t, h.svc, "solo"))
	}
	if got := h.addr(bind); got != addr {
		t.Errorf("solo listens on %s after reload, was %s", got, addr)
	}
}

// TestReloadRefusedWhenABindCannotListen: a new bind address that cannot
// be listened on refuses the whole reload; the running config stays.
func TestReloadRefusedWhenABindCannotListen(t *testing.T) {
	h := start(t, sharedBindHCL)
	busy, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	extra := `
receive_connector "late" {
  bind = ["` + busy.Addr().String() + `"]
}
`
	cfg, err := policy.LoadBytes(filepath.Join(h.dir, "hubd.hcl"), []byte(baseHCL(t, h.dir)+sharedBindHCL+extra), h.dir)
	if err != nil {
		t.Fatal(err)
	}
	before := h.svc.Addrs()
	if err := h.svc.Reload(cfg); err == nil {
		t.Fatal("reload with a bind in use succeeded")
	}
	if after := h.svc.Addrs(); len(after) != len(before) {
		t.Errorf("listeners changed by a refused reload: %v → %v", before, after)
	}
	if n := len(h.svc.Connectors()); n != 4 {
		t.Errorf("connectors after a refused reload: %d, want the 4 of the running config", n)
	}
}
