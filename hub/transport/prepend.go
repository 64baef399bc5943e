package transport

import (
	"bytes"
	"io"
	"strings"

	"hubd/hub"
	"hubd/hub/queue"
)

// Header fields above the stored content (queue.State.Prepend): what a
// submitted body decided at its end (hub.HeaderSource: the receive checks'
// Authentication-Results), and what the hub adds once, later (a DKIM
// signature). They are stored with the message, so every delivery attempt
// and every DSN that returns the content sends the same bytes; list trace
// fields (categorizer.TraceHeader), which differ per list, go above them.

// headersAtEnd reads a HeaderSource body and, at its EOF, puts the header
// fields it decided into m's state. The store reads m only after the
// body's EOF (queue.Store), so they are part of the record Put writes.
// An hub.AuthResultsSource also gives the summary for the tracking log.
type headersAtEnd struct {
	src  hub.HeaderSource
	m    *queue.Message
	done bool
	auth string // AuthResults, for the RECEIVE event
}

func (h *headersAtEnd) Read(p []byte) (int, error) {
	n, err := h.src.Read(p)
	if err == io.EOF && !h.done {
		h.done = true
		h.m.State.Prepend = h.src.HeadersAtEnd() + h.m.State.Prepend
		if a, ok := h.src.(hub.AuthResultsSource); ok {
			h.auth = a.AuthResults()
		}
	}
	return n, err
}

// openContent opens message id's content as it is sent: above (list trace
// fields, or nil), its prepend (State.Prepend, read by the caller under
// e.mu), then the stored body.
func (t *Transport) openContent(id hub.QueueID, prepend string, above []byte) (io.ReadCloser, error) {
	rc, err := t.store.Open(id)
	if err != nil || len(above) == 0 && prepend == "" {
		return rc, err
	}
	return readCloser{io.MultiReader(bytes.NewReader(above), strings.NewReader(prepend), rc), rc}, nil
}
