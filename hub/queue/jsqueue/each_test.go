package jsqueue

import (
	"context"
	"strings"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
)

// each visits every queued message once, removed ones never.
func TestEachVisitsEachMessageOnce(t *testing.T) {
	ns := startServer(t, t.TempDir())
	s := openStore(t, ns, "a", time.Second)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 6; i++ {
		m := newMessage("x@example.net")
		if err := s.Put(ctx, m, strings.NewReader("body")); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(m.ID))
	}
	for _, id := range ids[:2] {
		if err := s.Remove(hubID(id)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	err := s.each(ctx, func(m *queue.Message, owner string, rev uint64, removed, object bool) error {
		seen[string(m.ID)]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 4 {
		t.Fatalf("each saw %v", seen)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s seen %d times", id, n)
		}
	}
}

func hubID(s string) hub.QueueID { return hub.QueueID(s) }
