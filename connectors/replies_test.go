package connectors

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goSMTPUnreachable are go-smtp's fixed error replies that hubd never lets
// it write, each with the reason.
var goSMTPUnreachable = map[string]string{
	"421 4.4.5 Too busy. Try again later.":                 "Conn.Reject is never called",
	"500 5.5.1 This is a LMTP server, use LHLO":            "not an LMTP server; LHLO: the filter answers 500",
	"500 5.5.1 This is not a LMTP server":                  "the filter answers LHLO as unrecognized",
	"500 5.5.1 Too many errors. Quiting now":               "the filter answers every command go-smtp would count",
	"501 5.5.2 Domain/address argument required for HELO":  "the filter answers EHLO/HELO without an argument",
	"501 5.5.4 BY parameter is below server minimum":       "BY: the filter answers 555",
	"501 5.5.4 DATA command should not have any arguments": "the filter checks DATA's syntax",
	"501 5.5.4 MT-PRIORITY is outside valid range":         "MT-PRIORITY: the filter answers 555",
	"501 5.5.4 Malformed BY parameter value":               "BY: the filter answers 555",
	"501 5.5.4 Malformed MT-PRIORITY parameter value":      "MT-PRIORITY: the filter answers 555",
	"501 5.5.4 Malformed RRVS parameter value":             "RRVS: the filter answers 555",
	"501 5.5.4 Malformed size argument":                    "the filter checks BDAT's syntax",
	"501 5.5.4 Missing chunk size argument":                "the filter checks BDAT's syntax",
	"501 5.5.4 Too many arguments":                         "the filter checks BDAT's syntax",
	"501 5.5.4 Unknown BDAT argument":                      "the filter checks BDAT's syntax",
	"502 5.5.1 Already running in TLS":                     "the filter does STARTTLS",
	"502 5.5.1 TLS not supported":                          "the filter does STARTTLS",
	"502 5.5.1 DATA not allowed during message transfer":   "the filter's state machine answers 503",
	"502 5.5.1 DATA not allowed for BINARYMIME messages":   "BODY=BINARYMIME is refused at MAIL",
	"502 5.5.1 MAIL not allowed during message transfer":   "the filter's state machine answers 503",
	"502 5.5.1 Missing MAIL FROM command.":                 "the filter's state machine answers 503",
	"502 5.5.1 Missing RCPT TO command.":                   "the filter's state machine answers 503/554",
	"502 5.5.1 Please introduce yourself first.":           "the filter's state machine answers 503",
	"502 5.5.1 RCPT not allowed during message transfer":   "the filter's state machine answers 503",
	"502 5.5.4 Missing parameter":                          "the filter checks AUTH's syntax",
	"503 5.5.1 Already authenticated":                      "the filter's state machine answers it",
	"504 5.5.4 DELIVERBY is not implemented":               "BY: the filter answers 555",
	"504 5.5.4 ENVID is not implemented":                   "DSN is enabled",
	"504 5.5.4 MT-PRIORITY is not implemented":             "MT-PRIORITY: the filter answers 555",
	"504 5.5.4 NOTIFY is not implemented":                  "DSN is enabled",
	"504 5.5.4 ORCPT is not implemented":                   "DSN is enabled",
	"504 5.5.4 REQUIRETLS is not implemented":              "REQUIRETLS is enabled (and refused without TLS by the session)",
	"504 5.5.4 RET is not implemented":                     "DSN is enabled",
	"504 5.5.4 RRVS is not implemented":                    "RRVS: the filter answers 555",
	"504 5.5.4 SMTPUTF8 is not implemented":                "SMTPUTF8 is enabled",
	"550 5.0.0 Handshake error":                            "go-smtp never sees TLS",
}

// TestGoSMTPTextsMapped reads the go-smtp source this module builds with
// and checks that each of its fixed error replies is either put in our
// words (goSMTPReplies) or can never be written (goSMTPUnreachable).
// Success replies (2xx, 3xx) are replaced by command (replyFor) and are
// checked by TestReplyTable. A go-smtp upgrade with a new text fails here.
func TestGoSMTPTextsMapped(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emersion/go-smtp").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "conn.go"))
	if err != nil {
		t.Skipf("go-smtp source: %v", err)
	}
	re := regexp.MustCompile(`writeResponse\(([45]\d\d), EnhancedCode\{(\d), (\d), (\d)\}, "([^"]*)"\)`)
	n := 0
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		n++
		line := m[1] + " " + m[2] + "." + m[3] + "." + m[4] + " " + m[5]
		_, mapped := goSMTPReplies[line]
		_, unreachable := goSMTPUnreachable[line]
		if !mapped && !unreachable {
			t.Errorf("go-smtp reply %q is neither mapped nor known unreachable", line)
		}
	}
	if n < 40 {
		t.Errorf("found only %d go-smtp error replies: did its source change shape?", n)
	}
}
