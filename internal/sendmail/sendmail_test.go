package sendmail

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hubd/internal/maildrop"
)

// setup writes a configuration whose maildrop is under a fresh directory.
func setup(t *testing.T) (cfg, drop string) {
	t.Helper()
	dir := t.TempDir()
	drop = filepath.Join(dir, "maildrop")
	if err := maildrop.Prepare(drop, ""); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "hubd.hcl")
	src := "hub {\n  hostname = \"mx.example.test\"\n  spool_dir = \"spool\"\n}\n" +
		"receive_connector \"x\" {\n  bind = [\"127.0.0.1:0\"]\n  tls { key_file = \"/root/secret.key\" }\n}\n"
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, drop
}

func run(t *testing.T, cfg, input string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main("/usr/sbin/sendmail", args, IO{Stdin: strings.NewReader(input), Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string {
			if k == "HUBD_CONFIG" {
				return cfg
			}
			return ""
		}})
	return code, out.String(), errb.String()
}

// dropped returns the files in the maildrop (final and temporary).
func dropped(t *testing.T, drop string) []string {
	t.Helper()
	entries, err := os.ReadDir(drop)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != maildrop.CorruptDir {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestExitCodesAndNothingHalfWritten(t *testing.T) {
	cfg, drop := setup(t)
	cases := []struct {
		name, input string
		args        []string
		code        int
		stderr      string
	}{
		{"no recipients", "Subject: x\n\nhi\n", nil, 65, "sendmail: no recipients specified"},
		{"-t without To", "Subject: x\n\nhi\n", []string{"-t"}, 65, "sendmail: no recipients found"},
		{"broken header", "To: a@example.test\nSubject hello\n\nbody\n", []string{"-t"}, 65, "line 2: \"Subject hello\" is not a header field"},
		{"continuation first", " folded\nTo: a@example.test\n\nx\n", []string{"a@example.test"}, 65, "starts with a continuation line"},
		{"bad recipient", "x\n", []string{"a@@example.test"}, 67, "sendmail: recipient \"a@@example.test\""},
		{"bad To", "To: <a@[bad\n\nx\n", []string{"-t"}, 67, "sendmail: To:"},
		{"bad sender", "x\n", []string{"-f", "a b@c@d", "x@example.test"}, 67, "sendmail: sender"},
		{"unknown option", "", []string{"-Z"}, 64, "unknown option -Z"},
		{"missing argument", "", []string{"-f"}, 64, "option -f requires an argument"},
		{"bad -N", "", []string{"-N", "sometimes", "a@example.test"}, 64, "-N sometimes"},
		{"bad -B", "", []string{"-B", "BINARYMIME", "a@example.test"}, 64, "-B BINARYMIME"},
		{"unsupported -bd", "", []string{"-bd"}, 64, "-bd is not supported"},
		{"bad config", "", []string{"-C", "/nonexistent/hubd.hcl", "a@example.test"}, 78, "cannot read the configuration"},
		{"maildrop missing", "x\n", []string{"-C", writeOther(t, "/nonexistent/drop"), "a@example.test"}, 73, "cannot write to the maildrop /nonexistent/drop"},
		{"maildrop is a file", "x\n", []string{"-C", writeOther(t, cfg), "a@example.test"}, 73, "not a directory"},
	}
	for _, c := range cases {
		code, _, stderr := run(t, cfg, c.input, c.args...)
		if code != c.code || !strings.Contains(stderr, c.stderr) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q on one line", c.name, code, stderr, c.code, c.stderr)
		}
	}
	if left := dropped(t, drop); len(left) > 0 {
		t.Errorf("failed calls left %v in the maildrop", left)
	}
}

// writeOther writes a configuration whose maildrop_dir is drop.
func writeOther(t *testing.T, drop string) string {
	p := filepath.Join(t.TempDir(), "other.hcl")
	os.WriteFile(p, []byte("hub {\n spool_dir = \"/x/spool\"\n hostname = \"h.example\"\n maildrop_dir = \""+drop+"\"\n}\n"), 0o644)
	return p
}

func TestMessageAndEnvelope(t *testing.T) {
	cfg, drop := setup(t)
	input := "To: Alice <alice@example.test>, root\r\nCc: undisclosed-recipients:;\r\nBcc: carol@example.test\r\n" +
		"Subject: hi\r\n  folded\r\n\r\nline\r\n..dots stay\r\n.\r\nafter\n"
	code, _, stderr := run(t, cfg, input, "-t", "-i", "-F", "Jo Bloggs", "-N", "failure,delay", "-R", "hdrs", "-V", "env-1",
		"-B", "8bitmime", "-oem", "-h", "3", "-v", "--", "dave@example.test", "alice@example.test")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	names := dropped(t, drop)
	if len(names) != 1 {
		t.Fatalf("maildrop: %v", names)
	}
	f, err := maildrop.Open(filepath.Join(drop, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := f.Envelope
	var rcpts []string
	for _, r := range env.Recipients {
		rcpts = append(rcpts, r.Address)
		if strings.Join(r.Notify, ",") != "FAILURE,DELAY" {
			t.Errorf("notify %v", r.Notify)
		}
	}
	// Postfix ≥ 2.1: -t adds the header's recipients to the arguments.
	if got := strings.Join(rcpts, " "); got != "dave@example.test alice@example.test root@mx.example.test carol@example.test" {
		t.Errorf("recipients %s", got)
	}
	if env.From != "root@mx.example.test" && !strings.HasSuffix(env.From, "@mx.example.test") {
		t.Errorf("sender %q", env.From)
	}
	if env.Ret != "HDRS" || env.EnvID != "env-1" || env.Body != "8BITMIME" {
		t.Errorf("envelope %+v", env)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(f.Body)
	want := "To: Alice <alice@example.test>, root\r\nCc: undisclosed-recipients:;\r\nSubject: hi\r\n  folded\r\n" +
		"From: \"Jo Bloggs\" <" + env.From + ">\r\n\r\nline\r\n..dots stay\r\n.\r\nafter\r\n"
	if body.String() != want {
		t.Errorf("message\n%q\nwant\n%q", body.String(), want)
	}
}

func TestNullSenderAndBody(t *testing.T) {
	cfg, drop := setup(t)
	if code, _, stderr := run(t, cfg, "no header at all\nsecond\n.\nnot read\n", "-f", "<>", "a@example.test"); code != 0 {
		t.Fatalf("exit %d %s", code, stderr)
	}
	names := dropped(t, drop)
	f, err := maildrop.Open(filepath.Join(drop, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	body := new(bytes.Buffer)
	body.ReadFrom(f.Body)
	if f.Envelope.From != "" || !strings.HasSuffix(body.String(), "\r\n\r\nno header at all\r\nsecond\r\n") {
		t.Errorf("sender %q, message %q", f.Envelope.From, body.String())
	}
}

// TestSMTPSession is sendmail -bs: a dialogue on stdin/stdout.
func TestSMTPSession(t *testing.T) {
	cfg, drop := setup(t)
	in := "EHLO client\r\nRCPT TO:<a@example.test>\r\nMAIL FROM:<s@example.test> BODY=8BITMIME\r\n" +
		"MAIL FROM:<x@example.test>\r\nDATA\r\nRCPT TO:<a@example.test> NOTIFY=NEVER\r\nRCPT TO:<bad@@x>\r\nRCPT TO:<b@example.test> FOO=1\r\n" +
		"DATA\r\nSubject: smtp\r\n\r\n..leading dot\r\n.\r\n" +
		"MAIL FROM:<>\r\nRCPT TO:<c@example.test>\r\nDATA\r\nTo: c@example.test\r\nbroken\r\n\r\nx\r\n.\r\nXYZZY\r\nQUIT\r\n"
	code, out, stderr := run(t, cfg, in, "-bs")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d %s", code, stderr)
	}
	replies := strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
	want := []string{"220 mx.example.test ESMTP", "250-mx.example.test", "250-8BITMIME", "250-DSN", "250 ENHANCEDSTATUSCODES",
		"503 5.5.1", "250 2.1.0", "503 5.5.1 Error: nested MAIL", "503 5.5.1 Error: need RCPT", "250 2.1.5",
		"553 5.1.3", "555 5.5.4", "354 ", "250 2.0.0 Ok: queued as ",
		"250 2.1.0", "250 2.1.5", "354 ", "554 5.6.0 Message refused: line 2", "502 5.5.2", "221 2.0.0"}
	if len(replies) != len(want) {
		t.Fatalf("replies:\n%s", out)
	}
	for i, w := range want {
		if !strings.HasPrefix(replies[i], w) {
			t.Errorf("reply %d: %q, want %q", i, replies[i], w)
		}
	}
	names := dropped(t, drop)
	if len(names) != 1 || !strings.HasSuffix(replies[13], names[0]) {
		t.Fatalf("maildrop %v, reply %q", names, replies[13])
	}
	f, err := maildrop.Open(filepath.Join(drop, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	body := new(bytes.Buffer)
	body.ReadFrom(f.Body)
	if f.Envelope.From != "s@example.test" || f.Envelope.Body != "8BITMIME" || len(f.Envelope.Recipients) != 1 || f.Envelope.Recipients[0].Notify[0] != "NEVER" ||
		!strings.Contains(body.String(), "\r\n\r\n.leading dot\r\n") {
		t.Errorf("envelope %+v message %q", f.Envelope, body.String())
	}
}
