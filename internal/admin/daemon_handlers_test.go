package admin_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"hubd/internal/admin"
	"hubd/internal/admintest"
)

// hubHCL: "internet" and "apps" share a bind ("apps" is the more specific
// for 127.0.0.2), "solo" is alone on its bind, "off" is disabled; mail for
// example.test goes to a Maildir, everything else to a smart host that is
// never reached here.
func hubHCL(banner, extra string) string {
	return fmt.Sprintf(`
hub {
  hostname  = "mx.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
mailbox "bob@example.test" { maildir = "{{dir}}/mail/bob" }
receive_connector "internet" {
  bind            = ["127.0.0.1:0"]
  banner          = %q
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
send_connector "partner" {
  address_spaces = ["partner.test"]
  smart_hosts    = ["[127.0.0.1]:9"]
}
%s`, banner, extra)
}

// greeting dials addr from the source address from ("": any) and returns
// the first reply line.
func greeting(t *testing.T, addr, from string) string {
	t.Helper()
	d := textprotoDialer(from)
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := textproto.NewReader(bufioReader(c)).ReadLine()
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func apiStatus(err error) int {
	var ae *admin.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func connector(t *testing.T, c *admin.Client, name string) admin.ConnectorInfo {
	t.Helper()
	list, err := c.Connectors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range list {
		if ci.Name == name {
			return ci
		}
	}
	t.Fatalf("no connector %q in %+v", name, list)
	return admin.ConnectorInfo{}
}

// TestAPIConnectorStopStart: stop and start over the API, the display, the
// 421 for peers of a stopped connector on a shared bind, the errors (404,
// 409), and the override gone after a reload and after a restart.
func TestAPIConnectorStopStart(t *testing.T) {
	h := admintest.Start(t, hubHCL("mx.example.test ESMTP", ""))
	ctx := context.Background()
	c := h.Client
	if ci := connector(t, c, "apps"); ci.State != "running" || !ci.Enabled || ci.Override ||
		!slices.Equal(ci.Bindings, []string{"127.0.0.1:0"}) || !slices.Equal(ci.RemoteIPRanges, []string{"127.0.0.2/32"}) {
		t.Errorf("apps at start: %+v", ci)
	}
	if ci := connector(t, c, "off"); ci.State != "disabled" || ci.Enabled {
		t.Errorf("off: %+v", ci)
	}

	res, err := c.StopConnector(ctx, "apps")
	if err != nil || !res.OK || res.ID != "apps" {
		t.Fatalf("stop apps: %+v, %v", res, err)
	}
	const stopped = "stopped (runtime override; config says enabled)"
	if ci := connector(t, c, "apps"); ci.State != stopped || !ci.Override || !ci.Enabled {
		t.Errorf("apps stopped: %+v", ci)
	}
	shared := h.Addr("127.0.0.1:0")
	if g := greeting(t, shared, "127.0.0.2"); g != "421 4.3.2 mx.example.test Service not available, closing transmission channel" {
		t.Errorf("peer of the stopped connector: %q", g)
	}
	if g := greeting(t, shared, "127.0.0.1"); !strings.HasPrefix(g, "220 mx.example.test ESMTP") {
		t.Errorf("peer of the running connector on the same bind: %q", g)
	}
	if ci := connector(t, c, "apps"); ci.Refused != 1 {
		t.Errorf("apps refused %d connections, want 1", ci.Refused)
	}
	st, err := c.Status(ctx)
	if err != nil || !slices.Contains(st.Overrides, "connector apps "+stopped) {
		t.Errorf("status overrides %q, %v", st.Overrides, err)
	}

	for _, tc := range []struct {
		name string
		act  func(context.Context, string) (admin.ActionResult, error)
		code int
		msg  string
	}{
		{"apps", c.StopConnector, http.StatusConflict, "already stopped"},
		{"internet", c.StartConnector, http.StatusConflict, "is running"},
		{"off", c.StartConnector, http.StatusConflict, "disabled by the configuration"},
		{"off", c.StopConnector, http.StatusConflict, "disabled by the configuration"},
		{"nosuch", c.StopConnector, http.StatusNotFound, "no receive connector by that name"},
	} {
		_, err := tc.act(ctx, tc.name)
		if apiStatus(err) != tc.code || !strings.Contains(fmt.Sprint(err), tc.msg) {
			t.Errorf("%s: got %v (status %d), want %d %q", tc.name, err, apiStatus(err), tc.code, tc.msg)
		}
	}

	// Stop solo (alone on its bind: the listener closes), then reload:
	// every override ends, the report says so.
	if _, err := c.StopConnector(ctx, "solo"); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Addrs()["127.0.0.3:0"]; ok {
		t.Error("solo's listener open while solo is stopped")
	}
	rr, err := c.Reload(ctx)
	if err != nil || !rr.Applied {
		t.Fatalf("reload: %+v, %v", rr, err)
	}
	if !slices.Equal(rr.OverridesEnded, []string{"apps", "solo"}) || !slices.Equal(rr.Started, []string{"apps", "solo"}) ||
		!slices.Equal(rr.Opened, []string{"127.0.0.3:0"}) {
		t.Errorf("reload after stops: %+v", rr)
	}
	if ci := connector(t, c, "apps"); ci.State != "running" || ci.Override {
		t.Errorf("apps after reload: %+v", ci)
	}
	if !strings.Contains(h.Logs.String(), `level=WARN msg="receive connector stopped (runtime override; config says enabled)" connector=apps`) {
		t.Errorf("the stop is not logged at warning level:\n%s", h.Logs.String())
	}

	// A restart: config is the truth.
	if _, err := c.StopConnector(ctx, "apps"); err != nil {
		t.Fatal(err)
	}
	h.Restart()
	if ci := connector(t, h.Client, "apps"); ci.State != "running" {
		t.Errorf("apps after restart: %+v", ci)
	}
	if st, _ := h.Client.Status(ctx); len(st.Overrides) != 0 {
		t.Errorf("overrides after restart: %q", st.Overrides)
	}
}

// TestAPIReloadReport: an applied reload says which connectors started,
// stopped and changed, which listeners opened and closed, what needs a
// restart; a refused one keeps the old config (on the wire too) and
// returns every diagnostic with file:line:col.
func TestAPIReloadReport(t *testing.T) {
	h := admintest.Start(t, hubHCL("old banner", ""))
	ctx := context.Background()
	st0, err := h.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st0.ConfigHash, "sha256:") || st0.ConfigPath != h.ConfigPath || st0.Version != "test" ||
		st0.BackPressure != "normal" || st0.Hostname != "mx.example.test" {
		t.Errorf("status: %+v", st0)
	}

	next := strings.Replace(hubHCL("new banner", `
receive_connector "late" {
  bind = ["127.0.0.6:0"]
}
`), `receive_connector "solo"`, `receive_connector "solo2"`, 1)
	next = strings.Replace(next, `spool_dir = "{{dir}}/spool"`, `spool_dir = "{{dir}}/spool"
  tracking_log { max_age = "3d" }`, 1)
	h.Write(next)
	rr, err := h.Client.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := admin.ReloadResult{Applied: true, Started: []string{"late", "solo2"}, Stopped: []string{"solo"},
		Changed: []string{"internet"}, Opened: []string{"127.0.0.6:0"}, NeedsRestart: []string{"hub.tracking_log (the log stays as it was opened)"}}
	if !rr.Applied || !slices.Equal(rr.Started, want.Started) || !slices.Equal(rr.Stopped, want.Stopped) ||
		!slices.Equal(rr.Changed, want.Changed) || !slices.Equal(rr.Opened, want.Opened) || len(rr.Closed) != 0 ||
		!slices.Equal(rr.NeedsRestart, want.NeedsRestart) || rr.ConfigHash == st0.ConfigHash {
		t.Errorf("reload:\n got %+v\nwant %+v", rr, want)
	}
	applied := rr.ConfigHash
	if st, _ := h.Client.Status(ctx); st.ConfigHash != applied {
		t.Errorf("status hash %s after the reload, result says %s", st.ConfigHash, applied)
	}
	if g := greeting(t, h.Addr("127.0.0.1:0"), ""); g != "220 new banner" {
		t.Errorf("greeting after reload: %q", g)
	}
	logs := h.Logs.String()
	for _, line := range []string{`msg="reload: receive connector started" connector=late`,
		`msg="reload: receive connector stopped" connector=solo`, `msg="reload: receive connector changed; new sessions use the new settings" connector=internet`,
		`msg="reload: listener opened" bind=127.0.0.6:0`, `msg="configuration reloaded"`} {
		if !strings.Contains(logs, line) {
			t.Errorf("the log lacks %s", line)
		}
	}

	// Two errors: both reported, nothing applied.
	h.Write(next + "\nreceive_connector \"bad\" {\n  colour = 1\n}\nsend_connector \"worse\" { cost = \"x\" }\n")
	rr, err = h.Client.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rr.Applied || len(rr.Diagnostics) < 2 {
		t.Fatalf("refused reload: %+v", rr)
	}
	for _, d := range rr.Diagnostics {
		if !strings.HasPrefix(d, h.ConfigPath+":") || !strings.Contains(d, ": error: ") {
			t.Errorf("diagnostic %q lacks file:line:col: error:", d)
		}
	}
	if st, _ := h.Client.Status(ctx); rr.ConfigHash != "" || st.ConfigHash != applied {
		t.Errorf("hash after a refused reload: %s", st.ConfigHash)
	}
	if g := greeting(t, h.Addr("127.0.0.1:0"), ""); g != "220 new banner" {
		t.Errorf("greeting after a refused reload: %q", g)
	}
	logs = h.Logs.String()
	if n := strings.Count(logs, "reload refused"); n != 1 {
		t.Errorf("%d \"reload refused\" lines, want 1", n)
	}
	if strings.Count(logs, "configuration reloaded") != 1 {
		t.Errorf("a refused reload logged \"configuration reloaded\"")
	}
}

func textprotoDialer(from string) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return d
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// TestAPIRoutesAndTrack: GET /v1/routes parsed and checked; GET /v1/track
// finds a message received over SMTP by its queue id; bad parameters are
// 400.
func TestAPIRoutesAndTrack(t *testing.T) {
	h := admintest.Start(t, hubHCL("mx.example.test ESMTP", ""))
	ctx := context.Background()
	rep, err := h.Client.Routes(ctx, []string{"bob@example.test", "x@partner.test", "y@elsewhere.test"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Domains) != 1 || rep.Domains[0].Domain != "example.test" || rep.Domains[0].Type != "authoritative" {
		t.Errorf("accepted domains: %+v", rep.Domains)
	}
	if len(rep.SendConnectors) != 1 || rep.SendConnectors[0].Connector != "partner" ||
		!slices.Equal(rep.SendConnectors[0].SmartHosts, []string{"[127.0.0.1]:9"}) {
		t.Errorf("send connectors: %+v", rep.SendConnectors)
	}
	if len(rep.Addresses) != 3 {
		t.Fatalf("addresses: %+v", rep.Addresses)
	}
	for i, want := range []struct{ disposition, nextHop, reply string }{
		{"deliver", "maildir", ""},
		{"deliver", "smtp:partner[[127.0.0.1]:9]", ""},
		{"unreachable", "", "4.4.4"},
	} {
		o := rep.Addresses[i].Outcomes
		if len(o) != 1 || o[0].Disposition != want.disposition || o[0].NextHop != want.nextHop ||
			!strings.Contains(o[0].Reply, want.reply) || o[0].Why == "" {
			t.Errorf("%s: %+v, want %+v", rep.Addresses[i].Address, o, want)
		}
	}
	if _, err := h.Client.Routes(ctx, nil, "lots"); apiStatus(err) != http.StatusBadRequest {
		t.Errorf("size=lots: %v", err)
	}

	c, err := textprotoDialer("").Dial("tcp", h.Addr("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tp := textproto.NewConn(c)
	var qid string
	for _, s := range []struct {
		line string
		code int
	}{{"", 220}, {"EHLO track.test", 250}, {"MAIL FROM:<ann@remote.test>", 250}, {"RCPT TO:<bob@example.test>", 250},
		{"DATA", 354}, {"Message-ID: <track-1@remote.test>\r\nSubject: t\r\n\r\nhi\r\n.", 250}} {
		if s.line != "" {
			tp.PrintfLine("%s", s.line)
		}
		_, msg, err := tp.ReadResponse(s.code)
		if err != nil {
			t.Fatalf("%q: %v %s", s.line, err, msg)
		}
		if s.code == 250 && strings.HasPrefix(msg, "2.0.0 Ok: queued as ") {
			qid = strings.TrimPrefix(msg, "2.0.0 Ok: queued as ")
		}
	}
	var events []trackingEvent
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := h.Client.Track(ctx, admin.TrackQuery{QueueID: qid, Since: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		events = events[:0]
		for _, e := range evs {
			events = append(events, trackingEvent{string(e.Event), e.QueueID, e.Sender, e.MessageID})
		}
		if slices.ContainsFunc(events, func(e trackingEvent) bool { return e.event == "DELIVER" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no DELIVER event for %s: %+v", qid, events)
		}
		<-time.After(20 * time.Millisecond) // a poll interval
	}
	if events[0].event != "RECEIVE" || events[0].queueID != qid || events[0].sender != "ann@remote.test" {
		t.Errorf("first event: %+v", events[0])
	}
	byMsgID, err := h.Client.Track(ctx, admin.TrackQuery{MessageID: "track-1@remote.test", Limit: 1})
	if err != nil || len(byMsgID) != 1 || byMsgID[0].QueueID != qid {
		t.Errorf("by Message-ID, limit 1: %+v, %v", byMsgID, err)
	}
	for _, q := range []admin.TrackQuery{{Since: "yesterday"}, {Since: "-2h"}} {
		if _, err := h.Client.Track(ctx, q); apiStatus(err) != http.StatusBadRequest {
			t.Errorf("%+v: %v, want 400", q, err)
		}
	}
}

type trackingEvent struct{ event, queueID, sender, messageID string }

// TestAPIClusterLocal: on a single hub GET /v1/cluster says that the
// queue engine is local, and status's queue section the same, without a
// quorum to report.
func TestAPIClusterLocal(t *testing.T) {
	h := admintest.Start(t, hubHCL("", ""))
	ctx := context.Background()
	cs, err := h.Client.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Engine != admin.EngineLocal || !strings.Contains(cs.Note, "the queue engine is local") || cs.Node != "" ||
		cs.Quorum || cs.Streams != nil || cs.Hubs != nil {
		t.Errorf("cluster on a single hub: %+v", cs)
	}
	var raw map[string]any
	if err := h.Client.Do(ctx, http.MethodGet, "/v1/cluster", nil, nil, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["engine"] != "local" {
		t.Errorf("GET /v1/cluster: %v", raw)
	}
	st, err := h.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Queue != (admin.QueueStatus{Engine: admin.EngineLocal}) {
		t.Errorf("status queue on a single hub: %+v", st.Queue)
	}
	if err := h.Client.Do(ctx, http.MethodGet, "/v1/status", nil, nil, &raw); err != nil {
		t.Fatal(err)
	}
	if q, _ := raw["queue"].(map[string]any); len(q) != 1 || q["engine"] != "local" {
		t.Errorf("status JSON queue: %v", raw["queue"])
	}
}
