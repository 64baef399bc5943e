package queue

import (
	"context"
	"strings"
	"sync"
	"testing"

	"hubd/hub"
)

// TestPutBodyPieces: bodies around the sizes where Put's pieces end
// (bodyPiece) and where a body stops being inline (inlineMax), put by
// concurrent callers whose pieces come from one pool, read back whole,
// before and after a reopen (the records' CRCs cover the pieces).
func TestPutBodyPieces(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	sizes := []int{0, 1, bodyPiece - 1, bodyPiece, bodyPiece + 1, 3*bodyPiece + 7, inlineMax - 1, inlineMax, inlineMax + 1, inlineMax + bodyPiece + 1}
	want := map[hub.QueueID]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for round := range 3 {
		for i, n := range sizes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := strings.Repeat(string(rune('a'+(round*len(sizes)+i)%26)), n)
				m := newMessage("a@example.com")
				if err := s.Put(context.Background(), m, strings.NewReader(body)); err != nil {
					t.Error(err)
					return
				}
				if m.Size != int64(n) {
					t.Errorf("body of %d bytes: Size %d", n, m.Size)
				}
				mu.Lock()
				want[m.ID] = body
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	checkBodies(t, s, want)
	s.Close()
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), want)
}
