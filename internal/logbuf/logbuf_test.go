package logbuf

import (
	"fmt"
	"sync"
	"testing"
)

func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { fmt.Fprintf(&b, "line %d level=INFO\n", i) })
	}
	wg.Wait()
	if n := b.Count("line", "level=INFO"); n != 20 {
		t.Errorf("Count = %d, want 20", n)
	}
	if n := b.Count("line 7 "); n != 1 {
		t.Errorf("Count(line 7) = %d", n)
	}
	if b.Count("absent") != 0 {
		t.Error("Count of an absent part")
	}
}
