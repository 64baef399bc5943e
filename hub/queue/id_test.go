package queue

import (
	"context"
	"strings"
	"testing"
	"time"

	"hubd/hub"
)

// A receive connector reserves the queue ID when the transaction starts
// (hub.NewQueueID); Put keeps it, and refuses one that is not an ID.
func TestPutKeepsReservedID(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		ctx := context.Background()
		id := hub.NewQueueID(time.Now())
		m := newMessage("a@example.com", "b@example.net")
		m.ID = id
		if err := s.Put(ctx, m, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
		if m.ID != id {
			t.Fatalf("Put replaced reserved id %s with %s", id, m.ID)
		}
		bad := newMessage("a@example.com", "b@example.net")
		bad.ID = "../../etc/passwd"
		if err := s.Put(ctx, bad, strings.NewReader("x\r\n")); err == nil {
			t.Fatal("Put accepted an invalid reserved id")
		}
		s.Close()
		got, err := openEngine(t, e, dir).Load(ctx)
		if err != nil || len(got) != 1 || got[0].ID != id {
			t.Fatalf("Load after Put with reserved id: %v, %v", got, err)
		}
	})
}
