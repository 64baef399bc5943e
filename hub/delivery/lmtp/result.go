package lmtp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"hubd/hub/delivery"
	"hubd/internal/enhancedstatus"
)

// settleAddr gives every recipient with addr the result, unless settled.
func (s *session) settleAddr(addr string, r delivery.Result) {
	for _, i := range s.byAddr[addr] {
		if !s.settled[i] {
			s.results[i], s.settled[i] = r, true
		}
	}
}

// settleRest gives every recipient not yet settled the result.
func (s *session) settleRest(r delivery.Result) {
	for i := range s.results {
		if !s.settled[i] {
			s.results[i], s.settled[i] = r, true
		}
	}
}

// local is a decision made here, not a reply from the server.
func (s *session) local(st delivery.Status, code int, enhanced, text string) delivery.Result {
	return delivery.Result{Status: st, Code: code, Enhanced: enhanced, Text: text}
}

// remote is a result caused by what the server said.
func (s *session) remote(st delivery.Status, code int, enhanced, text string) delivery.Result {
	return delivery.Result{Status: st, Code: code, Enhanced: enhanced, Text: text, RemoteMTA: s.server}
}

// serverReply maps a negative (or unexpected positive) server reply.
func (s *session) serverReply(se *smtp.SMTPError) delivery.Result {
	enhanced := ""
	if e := se.EnhancedCode; e != smtp.EnhancedCodeNotSet && e != smtp.NoEnhancedCode {
		enhanced = fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	return s.classify(se.Code, enhanced, se.Message)
}

// parsedReply maps a reply whose text may start with an enhanced code
// (RFC 2034 §4), e.g. "2.0.0 <a@x> Saved".
func (s *session) parsedReply(code int, text string) delivery.Result {
	enhanced := ""
	if first, rest, _ := strings.Cut(text, " "); enhancedstatus.ForReply(first, code) {
		enhanced, text = first, rest
	}
	return s.classify(code, enhanced, text)
}

// classify: 2xx Delivered, 4xx Deferred, 5xx Failed. A missing enhanced
// code becomes the generic X.0.0 (RFC 3463 §3.1), so a DSN always has one.
func (s *session) classify(code int, enhanced, text string) delivery.Result {
	st := delivery.Deferred
	switch code / 100 {
	case 2:
		st = delivery.Delivered
	case 5:
		st = delivery.Failed
	case 4:
	default:
		// Not a final reply: nothing was decided, so try again later.
		return s.remote(delivery.Deferred, 451, "4.5.0",
			"unexpected reply "+strconv.Itoa(code)+" "+oneLine(text))
	}
	if enhanced == "" {
		enhanced = strconv.Itoa(code/100) + ".0.0"
	}
	return s.remote(st, code, enhanced, oneLine(text))
}

// connFailure is the result of failing to reach, or to open a session
// with, the server: Deferred 451 4.4.1 with Connection set, so the
// transport retries the whole next hop later.
func (s *session) connFailure(ctx context.Context, stage string, err error) delivery.Result {
	if cerr := ctx.Err(); cerr != nil {
		return abandoned(cerr)
	}
	r := s.local(delivery.Deferred, 451, "4.4.1", fmt.Sprintf("%s %s: %s", stage, s.server, describe(err)))
	r.Connection = true
	return r
}

// lost is the result for recipients left unsettled when the connection
// broke or timed out inside a transaction: Deferred 451 4.4.2.
func (s *session) lost(ctx context.Context, stage string, err error) delivery.Result {
	if cerr := ctx.Err(); cerr != nil {
		return abandoned(cerr)
	}
	return s.local(delivery.Deferred, 451, "4.4.2", fmt.Sprintf("%s %s: %s", stage, s.server, describe(err)))
}

func abandoned(err error) delivery.Result {
	return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.2", Text: "delivery abandoned: " + err.Error()}
}

// describe says "timeout: ..." for a timeout, so the log tells a silent
// server from a refused connection at a glance.
func describe(err error) string {
	if err == nil {
		return "connection closed"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout: " + oneLine(err.Error())
	}
	return oneLine(err.Error())
}

func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
}

// validAddress rejects what cannot go into a MAIL or RCPT line: control
// characters (a CR or LF would inject a command) and angle brackets. The
// connector validated the envelope; this only keeps the session sane.
func validAddress(a string, nullOK bool) bool {
	if a == "" {
		return nullOK
	}
	return !strings.ContainsFunc(a, func(r rune) bool {
		return r < 0x20 || r == 0x7f || r == '<' || r == '>'
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// scan reports whether the message holds a byte >= 0x80: in its header
// section only (headerOnly, for SMTPUTF8) or anywhere (for 8BITMIME). A
// message that cannot be read counts as holding one, so the envelope's
// word is kept.
func (s *session) scan(headerOnly bool) bool {
	body, err := s.msg.Open()
	if err != nil {
		return true
	}
	defer body.Close()
	br := bufio.NewReader(body)
	for {
		line, err := br.ReadSlice('\n')
		if headerOnly && err == nil && len(bytes.TrimRight(line, "\r\n")) == 0 {
			return false // the blank line that ends the header section
		}
		if !isASCII(string(line)) {
			return true
		}
		if err != nil && err != bufio.ErrBufferFull {
			return err != io.EOF
		}
	}
}

// readErr remembers an error from the queued message, to tell a local read
// failure from a broken connection when io.Copy fails.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
