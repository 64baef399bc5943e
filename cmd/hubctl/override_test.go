package main

// End to end, against a hubd child process with mail waiting in a queue:
// mailq in Postfix's layout, a connector stopped at runtime (shown as an
// override everywhere, gone after a restart), and the tracking log.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/smtp"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"hubd/hub/tracking"
	"hubd/internal/admin"
	"hubd/internal/smtpsink"
)

func TestMailqConnectorOverrideAndTrack(t *testing.T) {
	dir := t.TempDir()
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(string) error {
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try later"}
	}})
	in, cfg, sock := relayHub(t, dir, sink.Port(), `  quick_retry_interval = "1h"`, "", "")
	p := startHubd(t, cfg, sock)
	c := ctl{t, sock}
	for i := range 2 {
		msg := fmt.Sprintf("Subject: q%d\r\nMessage-ID: <q%d@example.test>\r\n\r\nbody\r\n", i, i)
		if err := smtp.SendMail(in, nil, "sender@example.test", []string{fmt.Sprintf("r%d@remote.test", i)}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "two deferred messages", func() bool { return len(c.messages("--state", "deferred")) == 2 })
	ids := []string{c.messages()[0].ID, c.messages()[1].ID}

	// mailq: Postfix's layout, parsed the way scripts parse it.
	mailq := exec.Command(filepath.Join(binDir, "mailq"), "-C", cfg)
	out, err := mailq.CombinedOutput()
	if err != nil {
		t.Fatalf("mailq: %v\n%s", err, out)
	}
	t.Logf("$ mailq\n%s", out)
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if lines[0] != "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------" {
		t.Errorf("mailq header: %q", lines[0])
	}
	if !regexp.MustCompile(`^-- \d+ Kbytes in 2 Requests\.$`).MatchString(lines[len(lines)-1]) {
		t.Errorf("mailq trailer: %q", lines[len(lines)-1])
	}
	entry := regexp.MustCompile(`^(\S+)\s+(\d+) (\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d)  sender@example\.test$`)
	var seen []string
	for i, l := range lines {
		if m := entry.FindStringSubmatch(l); m != nil {
			seen = append(seen, m[1])
			if !strings.Contains(lines[i+1], "(451 4.7.1 Greylisted, try later)") || !strings.HasPrefix(strings.TrimSpace(lines[i+2]), "r") {
				t.Errorf("mailq entry %s: reason and recipient lines: %q %q", m[1], lines[i+1], lines[i+2])
			}
		}
	}
	if strings.Join(seen, " ") != strings.Join(ids, " ") {
		t.Errorf("mailq ids %v, want %v", seen, ids)
	}
	// mailq --json: one object per line, as postqueue -j.
	out, err = exec.Command(filepath.Join(binDir, "mailq"), "-C", cfg, "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	n := 0
	for sc.Scan() {
		var m struct {
			QueueName  string `json:"queue_name"`
			QueueID    string `json:"queue_id"`
			Sender     string `json:"sender"`
			Recipients []struct {
				Address     string `json:"address"`
				DelayReason string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("mailq --json line %q: %v", sc.Text(), err)
		}
		if m.QueueName != "deferred" || m.QueueID != ids[n] || len(m.Recipients) != 1 || !strings.Contains(m.Recipients[0].DelayReason, "451 4.7.1") {
			t.Errorf("mailq --json: %+v", m)
		}
		n++
	}
	if n != 2 {
		t.Errorf("mailq --json: %d lines", n)
	}

	// connector stop: alone on its bind, so the listener closes; shown as a
	// runtime override in the list and in status.
	c.ok("connector", "stop", "in")
	if conn, err := net.Dial("tcp", in); err == nil {
		conn.Close()
		t.Errorf("connector stopped, but %s still accepts", in)
	}
	var cs []admin.ConnectorInfo
	c.json(&cs, "connector", "list")
	if len(cs) != 1 || cs[0].State != "stopped (runtime override; config says enabled)" || !cs[0].Override || cs[0].Accepted != 2 {
		t.Errorf("connector list: %+v", cs)
	}
	t.Logf("$ hubctl connector list\n%s", c.ok("connector", "list"))
	var st admin.Status
	c.json(&st, "status")
	if st.Messages != 2 || len(st.Overrides) != 1 || !strings.Contains(st.Overrides[0], "in stopped (runtime override") {
		t.Errorf("status: %+v", st)
	}
	t.Logf("$ hubctl status\n%s", c.ok("status"))

	// Config is the truth: after a restart the connector runs again.
	p.stop(t)
	startHubd(t, cfg, sock)
	cs = nil // fields left out (omitempty) must not keep the earlier decode's values
	c.json(&cs, "connector", "list")
	if cs[0].State != "running" || cs[0].Override {
		t.Errorf("after restart: %+v", cs[0])
	}
	if err := smtp.SendMail(in, nil, "sender@example.test", []string{"r2@remote.test"}, []byte("Subject: q2\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("after restart the connector does not accept: %v", err)
	}

	// track: every event of the first message, from RECEIVE to its DEFER.
	var evs []tracking.Event
	c.json(&evs, "track", "--queue-id", ids[0])
	events := ""
	for _, e := range evs {
		events += string(e.Event) + " "
	}
	if !strings.HasPrefix(events, "RECEIVE ") || !strings.Contains(events, "DEFER") {
		t.Errorf("track --queue-id: %s", events)
	}
	t.Logf("$ hubctl track --queue-id %s\n%s", ids[0], c.ok("track", "--queue-id", ids[0]))
}
