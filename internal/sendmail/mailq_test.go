package sendmail

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"hubd/hub/ops"
)

// serveList serves list at GET /v1/messages on a Unix socket, as hubd's
// admin API does, and returns a configuration pointing at it.
func serveList(t *testing.T, list ops.MessageList) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(list)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cfg := filepath.Join(dir, "hubd.hcl")
	os.WriteFile(cfg, []byte("hub {\n spool_dir = \"spool\"\n hostname = \"mx.example.test\"\n}\nadmin {\n socket = \"admin.sock\"\n}\n"), 0o644)
	return cfg
}

var cannedQueue = ops.MessageList{Messages: []ops.MessageSummary{
	{ID: "33n2jhj9lcoqqj5e19m6a", State: ops.StateActive, Arrived: time.Date(2026, 12, 4, 21, 20, 33, 0, time.UTC), Size: 1234,
		From: "alice@example.test", Recipients: []ops.RecipientSummary{{Address: "bob@example.net", Status: "queued"}}},
	{ID: "33n2jm3f9l9cusl03j910", State: ops.StateDeferred, Arrived: time.Date(2026, 12, 14, 9, 5, 1, 0, time.UTC), Size: 40960,
		From: "", Recipients: []ops.RecipientSummary{
			{Address: "x@remote.test", Status: "deferred", LastReply: "451 4.4.1 connection refused"},
			{Address: "y@remote.test", Status: "deferred", LastReply: "451 4.4.1 connection refused"},
			{Address: "z@other.test", Status: "deferred", LastReply: "452 4.2.2 mailbox full"}}},
	{ID: "33n2jm452tovf71ivknb0", State: ops.StateHeld, Arrived: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Size: 100,
		From: "bad\x01sender@example.test", Recipients: []ops.RecipientSummary{{Address: "c@example.test", Status: "queued"}}},
}}

// TestMailqPostfixLayout compares with the layout of Postfix's showq:
// columns, the "*" and "!" marks, reasons right-aligned to column 78 once
// per run of recipients sharing them, MAILER-DAEMON, the trailer.
func TestMailqPostfixLayout(t *testing.T) {
	var out bytes.Buffer
	WriteQueue(&out, cannedQueue, time.UTC)
	want := "" +
		"-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n" +
		"33n2jhj9lcoqqj5e19m6a*    1234 Fri Dec  4 21:20:33  alice@example.test\n" +
		"                                         bob@example.net\n" +
		"\n" +
		"33n2jm3f9l9cusl03j910   40960 Mon Dec 14 09:05:01  MAILER-DAEMON\n" +
		"                                                (451 4.4.1 connection refused)\n" +
		"                                         x@remote.test\n" +
		"                                         y@remote.test\n" +
		"                                                      (452 4.2.2 mailbox full)\n" +
		"                                         z@other.test\n" +
		"\n" +
		"33n2jm452tovf71ivknb0!     100 Fri Jan  2 03:04:05  bad?sender@example.test\n" +
		"                                         c@example.test\n" +
		"\n" +
		"-- 41 Kbytes in 3 Requests.\n"
	if out.String() != want {
		t.Errorf("mailq:\n%s\nwant:\n%s", out.String(), want)
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "(") && len(l) != 78 {
			t.Errorf("reason line not ending at column 78: %q", l)
		}
	}
	out.Reset()
	WriteQueue(&out, ops.MessageList{}, time.UTC)
	if out.String() != "Mail queue is empty\n" {
		t.Errorf("empty queue: %q", out.String())
	}
}

// TestMailqThroughAdminAPI runs mailq, sendmail -bp and mailq --json
// against a real HTTP server on a Unix socket; and against none (exit 69).
func TestMailqThroughAdminAPI(t *testing.T) {
	cfg := serveList(t, cannedQueue)
	var out, errb bytes.Buffer
	std := IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	if code := Main("mailq", []string{"-C", cfg}, std); code != 0 || !strings.Contains(out.String(), "-- 41 Kbytes in 3 Requests.") {
		t.Fatalf("mailq: %d %s %s", code, out.String(), errb.String())
	}
	mailqOut := out.String()
	out.Reset()
	if code := Main("sendmail", []string{"-bp", "-C", cfg}, std); code != 0 || out.String() != mailqOut {
		t.Errorf("sendmail -bp differs from mailq: %d\n%s", code, out.String())
	}
	out.Reset()
	if code := Main("mailq", []string{"--json", "-C", cfg}, std); code != 0 {
		t.Fatalf("mailq --json: %d %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("--json lines: %q", out.String())
	}
	var j struct {
		QueueName   string `json:"queue_name"`
		QueueID     string `json:"queue_id"`
		ArrivalTime int64  `json:"arrival_time"`
		MessageSize int64  `json:"message_size"`
		Sender      string `json:"sender"`
		Recipients  []struct {
			Address     string `json:"address"`
			DelayReason string `json:"delay_reason"`
		} `json:"recipients"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &j); err != nil {
		t.Fatal(err)
	}
	if j.QueueName != "deferred" || j.QueueID != "33n2jm3f9l9cusl03j910" || j.ArrivalTime != cannedQueue.Messages[1].Arrived.Unix() ||
		j.MessageSize != 40960 || j.Sender != "" || len(j.Recipients) != 3 || j.Recipients[2].DelayReason != "452 4.2.2 mailbox full" {
		t.Errorf("--json: %+v", j)
	}

	// hubd not running: the socket is gone.
	os.Remove(filepath.Join(filepath.Dir(cfg), "admin.sock"))
	errb.Reset()
	if code := Main("mailq", []string{"-C", cfg}, std); code != 69 || !strings.Contains(errb.String(), "mailq: cannot list the queue through hubd's admin API at ") ||
		!strings.Contains(errb.String(), "(is hubd running?)") {
		t.Errorf("unreachable: exit %d, %q", code, errb.String())
	}
}

// TestMailqPages: mailq lists the whole queue a page at a time, each page
// asked for after the previous one's next, never the whole queue at once,
// and prints one header and one trailer.
func TestMailqPages(t *testing.T) {
	defer func(n int) { mailqPage = n }(mailqPage)
	mailqPage = 2
	var all []ops.MessageSummary
	for i := range 5 {
		all = append(all, ops.MessageSummary{ID: fmt.Sprintf("33n2jhj9lcoqqj5e19m6%d", i), State: ops.StateDeferred,
			Arrived: time.Date(2026, 12, 4, 21, 20, i, 0, time.UTC), Size: 1024, From: "a@example.test",
			Recipients: []ops.RecipientSummary{{Address: "b@example.net", Status: "deferred"}}})
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var afters []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("limit") != "2" {
			t.Errorf("page asked with limit %q", q.Get("limit"))
		}
		afters = append(afters, q.Get("after"))
		start := 0
		for i, m := range all {
			if ops.PositionOf(m).String() == q.Get("after") {
				start = i + 1
			}
		}
		page := ops.MessageList{Messages: all[start:min(start+2, len(all))]}
		if start+2 < len(all) {
			page.Truncated, page.Next = true, ops.PositionOf(all[start+1]).String()
		}
		json.NewEncoder(w).Encode(page)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cfg := filepath.Join(dir, "hubd.hcl")
	os.WriteFile(cfg, []byte("hub {\n spool_dir = \"spool\"\n hostname = \"mx.example.test\"\n}\nadmin {\n socket = \"admin.sock\"\n}\n"), 0o644)
	var out, errb bytes.Buffer
	std := IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	if code := Main("mailq", []string{"-C", cfg}, std); code != 0 {
		t.Fatalf("mailq: %d %s", code, errb.String())
	}
	want := []string{"", ops.PositionOf(all[1]).String(), ops.PositionOf(all[3]).String()}
	if !slices.Equal(afters, want) {
		t.Errorf("pages asked after %q, want %q", afters, want)
	}
	text := out.String()
	if strings.Count(text, "-Queue ID-") != 1 || !strings.HasSuffix(text, "\n-- 5 Kbytes in 5 Requests.\n") {
		t.Errorf("mailq:\n%s", text)
	}
	for _, m := range all {
		if strings.Count(text, m.ID) != 1 {
			t.Errorf("%s listed %d times", m.ID, strings.Count(text, m.ID))
		}
	}
	out.Reset()
	afters = nil
	if code := Main("mailq", []string{"--json", "-C", cfg}, std); code != 0 || strings.Count(out.String(), "\n") != 5 || len(afters) != 3 {
		t.Errorf("mailq --json: %d, %d pages\n%s", code, len(afters), out.String())
	}
}
