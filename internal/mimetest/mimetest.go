// Package mimetest decodes a MIME message into its leaf parts for tests
// that must show a converted message carries the same content as the
// original (hub/delivery/mime7bit, and the end-to-end test through
// Postfix's smtp-sink): each leaf is "media type: decoded octets", in
// order, with multipart bodies walked (a multipart/digest's parts default
// to message/rfc822) and message/rfc822 parts opened.
package mimetest

import (
	"bufio"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"testing"
)

// Leaves returns the decoded leaf parts of msg.
func Leaves(t testing.TB, msg string) []string {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(msg))
	hdr, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	return entityLeaves(t, hdr, br, false)
}

func entityLeaves(t testing.TB, hdr textproto.MIMEHeader, body io.Reader, digest bool) []string {
	t.Helper()
	mt, params := "text/plain", map[string]string{}
	if digest {
		mt = "message/rfc822" // RFC 2046 §5.1.5
	}
	if ct := hdr.Get("Content-Type"); ct != "" {
		mt, params, _ = mime.ParseMediaType(ct)
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		var out []string
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatalf("multipart: %v", err)
			}
			out = append(out, entityLeaves(t, p.Header, p, mt == "multipart/digest")...)
		}
	case mt == "message/rfc822":
		b, _ := io.ReadAll(body)
		return Leaves(t, string(b))
	}
	var r io.Reader = body
	switch strings.ToLower(hdr.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding %s: %v", mt, err)
	}
	return []string{mt + ": " + string(b)}
}
