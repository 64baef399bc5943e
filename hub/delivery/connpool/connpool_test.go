package connpool

import (
	"sync"
	"testing"
	"time"

	"hubd/hub/delivery"
)

// fakeConn stands for a client connection; quitting it is recorded.
type fakeConn struct{ name string }

type quitLog struct {
	mu   sync.Mutex
	quit []string
	ch   chan string
}

func newQuitLog() *quitLog { return &quitLog{ch: make(chan string, 16)} }

func (q *quitLog) fn(c *fakeConn) {
	q.mu.Lock()
	q.quit = append(q.quit, c.name)
	q.mu.Unlock()
	q.ch <- c.name
}

func (q *quitLog) names() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.quit...)
}

var (
	hopA = delivery.NextHop{Kind: delivery.KindLMTP, SmartHosts: "unix:/a"}
	hopB = delivery.NextHop{Kind: delivery.KindLMTP, SmartHosts: "unix:/b"}
)

// Take gives the most recent idle connection of that hop only, once.
func TestTakePerHopMostRecent(t *testing.T) {
	q := newQuitLog()
	p := New(time.Hour, q.fn)
	defer p.Close()
	c1, c2, c3 := &fakeConn{"1"}, &fakeConn{"2"}, &fakeConn{"3"}
	p.Put(hopA, c1)
	p.Put(hopA, c2)
	p.Put(hopB, c3)
	if p.Len() != 3 {
		t.Fatalf("Len = %d", p.Len())
	}
	if c, ok := p.Take(hopA, nil); !ok || c != c2 {
		t.Fatalf("Take(A) = %v %v, want 2", c, ok)
	}
	// The filter passes over connections it does not accept.
	if _, ok := p.Take(hopA, func(c *fakeConn) bool { return c.name == "9" }); ok {
		t.Fatal("filter ignored")
	}
	if c, ok := p.Take(hopA, func(c *fakeConn) bool { return c.name == "1" }); !ok || c != c1 {
		t.Fatalf("Take(A, 1) = %v %v", c, ok)
	}
	if _, ok := p.Take(hopA, nil); ok {
		t.Fatal("a connection was handed out twice")
	}
	if c, ok := p.Take(hopB, nil); !ok || c != c3 {
		t.Fatalf("Take(B) = %v %v", c, ok)
	}
	if n := len(q.names()); n != 0 {
		t.Errorf("%d connections quit while in use", n)
	}
}

// An idle connection is quit after the idle timeout and leaves the pool.
func TestIdleTimeout(t *testing.T) {
	q := newQuitLog()
	p := New(20*time.Millisecond, q.fn)
	defer p.Close()
	p.Put(hopA, &fakeConn{"1"})
	select {
	case name := <-q.ch:
		if name != "1" {
			t.Fatalf("quit %q", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection never quit")
	}
	if p.Len() != 0 {
		t.Errorf("Len = %d after the idle timeout", p.Len())
	}
	if _, ok := p.Take(hopA, nil); ok {
		t.Error("an expired connection was handed out")
	}
}

// A connection taken before its timer fires is never quit by it.
func TestTakeStopsTimer(t *testing.T) {
	q := newQuitLog()
	p := New(30*time.Millisecond, q.fn)
	c := &fakeConn{"1"}
	p.Put(hopA, c)
	if got, ok := p.Take(hopA, nil); !ok || got != c {
		t.Fatal("not taken")
	}
	// A second connection, put later, expires: by then the first one's
	// timer has had its chance too.
	p.Put(hopB, &fakeConn{"2"})
	if name := <-q.ch; name != "2" {
		t.Fatalf("quit %q, a connection in use", name)
	}
	p.Close()
	if got := q.names(); len(got) != 1 {
		t.Errorf("quit %v", got)
	}
}

// Close quits every idle connection before it returns; later Puts quit at
// once.
func TestClose(t *testing.T) {
	q := newQuitLog()
	p := New(time.Hour, q.fn)
	p.Put(hopA, &fakeConn{"1"})
	p.Put(hopB, &fakeConn{"2"})
	p.Close()
	if got := q.names(); len(got) != 2 {
		t.Fatalf("Close quit %v", got)
	}
	p.Put(hopA, &fakeConn{"3"})
	if got := q.names(); len(got) != 3 || got[2] != "3" {
		t.Fatalf("Put after Close: quit %v", got)
	}
	if p.Len() != 0 {
		t.Errorf("Len = %d after Close", p.Len())
	}
}
