package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
)

// parsedDSN is a DSN taken apart the way a mail client or bounce processor
// would: net/mail for the message, mime/multipart for the report, and
// net/textproto for the delivery-status field blocks.
type parsedDSN struct {
	header     mail.Header
	reportType string
	parts      []parsedPart
	perMessage textproto.MIMEHeader
	perRcpt    []textproto.MIMEHeader
}

type parsedPart struct {
	header textproto.MIMEHeader
	body   []byte // transfer-decoded
}

func (p parsedPart) mediaType() string {
	mt, _, _ := mime.ParseMediaType(p.header.Get("Content-Type"))
	return mt
}

// parseDSN parses a built DSN and checks what every DSN must satisfy: the
// lines of every part Build writes itself end in CRLF and fit in 998
// octets, the top level is multipart/report; report-type=delivery-status
// with three parts, and every recipient block has the required fields.
func parseDSN(body []byte) (*parsedDSN, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("net/mail: %w", err)
	}
	head := body[:bytes.Index(body, []byte("\r\n\r\n"))+2]
	if err := checkLines(head); err != nil {
		return nil, fmt.Errorf("top header: %w", err)
	}
	d := &parsedDSN{header: msg.Header}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	if mt != "multipart/report" {
		return nil, fmt.Errorf("top-level type %q", mt)
	}
	d.reportType = params["report-type"]
	if d.reportType != "delivery-status" {
		return nil, fmt.Errorf("report-type %q", d.reportType)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", len(d.parts)+1, err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", len(d.parts)+1, err)
		}
		d.parts = append(d.parts, parsedPart{header: p.Header, body: b})
	}
	if len(d.parts) != 3 {
		return nil, fmt.Errorf("%d parts, want 3", len(d.parts))
	}
	if mt := d.parts[0].mediaType(); mt != "text/plain" {
		return nil, fmt.Errorf("part 1 is %q", mt)
	}
	switch mt := d.parts[1].mediaType(); mt {
	case "message/delivery-status", "message/global-delivery-status":
	default:
		return nil, fmt.Errorf("part 2 is %q", mt)
	}
	switch mt := d.parts[2].mediaType(); mt {
	case "message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers":
	default:
		return nil, fmt.Errorf("part 3 is %q", mt)
	}
	if err := checkLines(d.parts[1].body); err != nil {
		return nil, fmt.Errorf("delivery-status: %w", err)
	}
	if err := d.parseStatus(); err != nil {
		return nil, err
	}
	return d, nil
}

// parseStatus reads the blocks of the delivery-status part (RFC 3464 §2.1).
func (d *parsedDSN) parseStatus() error {
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(d.parts[1].body)))
	var blocks []textproto.MIMEHeader
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			blocks = append(blocks, h)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("delivery-status: %w", err)
		}
	}
	if len(blocks) < 2 {
		return fmt.Errorf("delivery-status has %d blocks", len(blocks))
	}
	d.perMessage, d.perRcpt = blocks[0], blocks[1:]
	if d.perMessage.Get("Reporting-MTA") == "" {
		return errors.New("no Reporting-MTA")
	}
	for i, r := range d.perRcpt {
		for _, f := range []string{"Final-Recipient", "Action", "Status"} {
			if r.Get(f) == "" {
				return fmt.Errorf("recipient block %d lacks %s", i+1, f)
			}
		}
	}
	return nil
}

// checkLines checks that every line of b ends in CRLF and has at most 998
// octets before it (RFC 5322 §2.1.1).
func checkLines(b []byte) error {
	for line := range bytes.Lines(b) {
		if !bytes.HasSuffix(line, []byte("\r\n")) {
			return fmt.Errorf("line %q does not end in CRLF", truncate(string(line), 60))
		}
		if len(line)-2 > maxLine {
			return fmt.Errorf("line of %d octets", len(line)-2)
		}
		if bytes.ContainsAny(line[:len(line)-2], "\r\n") {
			return fmt.Errorf("bare CR or LF in %q", truncate(string(line), 60))
		}
	}
	return nil
}

// decodedSubject is the Subject with RFC 2047 encoded-words decoded.
func (d *parsedDSN) decodedSubject() string {
	s, err := new(mime.WordDecoder).DecodeHeader(d.header.Get("Subject"))
	if err != nil {
		return "undecodable: " + err.Error()
	}
	return s
}

func (d *parsedDSN) text() string { return strings.ReplaceAll(string(d.parts[0].body), "\r\n", "\n") }
