package transport

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/ops"
	"hubd/hub/queue"
)

// openGate holds the first Open after it is armed until released.
type openGate struct {
	queue.Store
	armed            atomic.Bool
	entered, release chan struct{}
}

func (s *openGate) Open(id hub.QueueID) (io.ReadCloser, error) {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return s.Store.Open(id)
}

// TestSigningDoesNotHoldTheMessage: while a message is being DKIM-signed
// (its content read through the signer: 2.5 s for 100 MiB), an operator's
// listing still answers; the signature then goes above the content.
func TestSigningDoesNotHoldTheMessage(t *testing.T) {
	spool := t.TempDir()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ed.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(configSource(spool), "#HUB", "", 1)
	src = strings.Replace(src, "#LISTS", `dkim "example.com" {
  key {
    selector = "ed"
    key_file = "`+keyFile+`"
  }
  sign = "all"
}`, 1)
	ls, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	store := &openGate{Store: ls, entered: make(chan struct{}), release: make(chan struct{})}
	md := &fake{result: ok}
	h := startStore(t, loadConfig(t, src), md, &fake{result: ok}, nil, store)
	store.armed.Store(true)
	h.submit("From: sender@example.com\r\nSubject: signed\r\n\r\nx\r\n", "alice@example.com")
	select {
	case <-store.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the signer never read the message")
	}
	listed := make(chan int, 1)
	go func() {
		l, _ := h.tr.Messages(t.Context(), ops.MessageFilter{})
		listed <- len(l.Messages)
	}()
	select {
	case n := <-listed:
		if n != 1 {
			t.Errorf("listing shows %d messages, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Error("the listing waited for the signer")
	}
	close(store.release)
	h.waitIdle()
	if got := md.seen(); len(got) != 1 || !strings.HasPrefix(got[0].body, "DKIM-Signature: ") {
		t.Errorf("delivered %+v, want one signed message", got)
	}
}
