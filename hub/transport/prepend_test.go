package transport

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
)

// atEnd is a hub.HeaderSource: it decides its header field only once its
// body has been read to the end, as the receive checks do; err, when set,
// is what its end reads instead (a check refusing the message).
type atEnd struct {
	r      io.Reader
	read   bool
	header string
	err    error
}

func (a *atEnd) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == io.EOF {
		a.read = true
		if a.err != nil {
			return n, a.err
		}
	}
	return n, err
}

func (a *atEnd) HeadersAtEnd() string {
	if !a.read {
		return "X-Too-Early: asked before the end\r\n"
	}
	return a.header
}

func (h *harness) submitBody(body io.Reader, rcpts ...string) (hub.QueueID, error) {
	env := hub.Envelope{From: "sender@example.com", Connector: "in", ReceivedAt: time.Now()}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, hub.Recipient{Address: r})
	}
	return h.tr.Submit(context.Background(), env, body)
}

// TestHeadersAtEndAreStoredAndSent: the header fields a body decides at its
// end are stored with the message before Submit returns, sent above the
// content on every attempt (the first, and one after a restart), counted
// in the size the next hop is told, and returned in a DSN; a body whose
// end refuses it queues nothing.
func TestHeadersAtEndAreStoredAndSent(t *testing.T) {
	spool := t.TempDir()
	cfg := config(t, spool, `retry_interval = "1h"
  quick_retry_interval = "1h"`)
	const field = "Authentication-Results: hub.example.com; spf=pass smtp.mailfrom=example.org\r\n"
	const body = "Subject: hi\r\n\r\nx\r\n"
	deferred := func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Deferred, Code: 421, Enhanced: "4.4.2", Text: "busy"}
	}
	sm1 := &fake{result: deferred}
	h1 := start(t, cfg, &fake{result: ok}, sm1, nil)
	id, err := h1.submitBody(&atEnd{r: strings.NewReader(body), header: field}, "carol@partner.example")
	if err != nil {
		t.Fatal(err)
	}
	m, err := h1.tr.store.Get(t.Context(), id)
	if err != nil || m.Prepend != field {
		t.Fatalf("stored prepend %q (%v), want %q", m.Prepend, err, field)
	}
	eventually(t, "the first attempt", func() bool { return len(sm1.seen()) == 1 })
	if got := sm1.seen()[0]; got.body != field+body || got.size != int64(len(field+body)) {
		t.Errorf("first attempt sent %q, size %d; want %q, size %d", got.body, got.size, field+body, len(field+body))
	}
	h1.close()

	md2, sm2 := &fake{result: ok}, &fake{result: func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.1.1", Text: "no such user"}
	}}
	h2 := start(t, cfg, md2, sm2, func() time.Time { return time.Now().Add(3 * time.Hour) })
	h2.waitIdle()
	if sc := sm2.seen(); len(sc) != 1 || sc[0].body != field+body {
		t.Fatalf("attempt after the restart: %+v", sc)
	}
	dsns := md2.seen()
	if len(dsns) != 1 || !strings.Contains(dsns[0].body, field+"Subject: hi") {
		t.Errorf("the failure DSN does not return the content with its field: %+v", dsns)
	}

	refused := errors.New("refused at the end")
	if _, err := h2.submitBody(&atEnd{r: strings.NewReader(body), header: field, err: refused}, "carol@partner.example"); !errors.Is(err, refused) {
		t.Errorf("Submit of a refused body: %v", err)
	}
	if n := len(spoolIDs(t, spool)); n != 0 {
		t.Errorf("%d messages in the spool after the refused one, want 0", n)
	}
}

// TestPrependSurvivesExpansion: the categorizer's new state (Expanded, the
// final recipient list) keeps the prepend.
func TestPrependSurvivesExpansion(t *testing.T) {
	spool := t.TempDir()
	sm := &fake{result: ok}
	h := start(t, config(t, spool, ""), &fake{result: ok}, sm, nil)
	const field = "X-Decided: at the end\r\n"
	if _, err := h.submitBody(&atEnd{r: strings.NewReader("x\r\n"), header: field}, "team@example.com"); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	for _, c := range append(h.maildir.seen(), sm.seen()...) {
		if !strings.HasPrefix(c.body, field) {
			t.Errorf("%v got %q without the field", c.addrs, c.body)
		}
	}
	if got := append(h.maildir.addrsDelivered(), sm.addrsDelivered()...); !slices.Equal(got, []string{"alice@example.com", "bob@example.com", "carol@partner.example"}) {
		t.Errorf("delivered to %v", got)
	}
}
