package smtpout

import (
	"context"
	"errors"
	"sync"
	"testing"

	"hubd/hub/delivery"
	"hubd/internal/smtpsink"
)

// countingSlots is a one-process Slots: limit holders per hop, counted.
type countingSlots struct {
	mu      sync.Mutex
	cond    *sync.Cond
	held    map[string]int
	peak    int
	acquire int
	fail    error
}

func newCountingSlots() *countingSlots {
	s := &countingSlots{held: map[string]int{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *countingSlots) Acquire(ctx context.Context, hop string, limit int) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, s.fail
	}
	for s.held[hop] >= limit {
		s.cond.Wait()
	}
	s.held[hop]++
	s.acquire++
	s.peak = max(s.peak, s.held[hop])
	return func() {
		s.mu.Lock()
		s.held[hop]--
		s.cond.Broadcast()
		s.mu.Unlock()
	}, nil
}

// Every connection holds a slot from its dial to its close, idle time in
// the pool included: eight concurrent deliveries with a limit of 2 never
// open a third connection, and closing the deliverer gives every slot back.
func TestSlotsBoundConnections(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	slots := newCountingSlots()
	opts := testOptions()
	opts.Slots, opts.SlotLimit = slots, func() int { return 2 }
	d := New(opts)
	hop := smartHop(sink.Addr())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := d.Deliver(context.Background(), hop, message("Subject: s\r\n\r\nx\r\n"), rcpts("a@remote.test"))
			expect(t, res[0], delivery.Delivered, 250, "2.0.0")
		}()
	}
	wg.Wait()
	sink.WaitFor(t, 8, waitLong)
	if p := sink.PeakOpenConnections(); p > 2 {
		t.Errorf("the sink saw %d connections at once, limit 2", p)
	}
	slots.mu.Lock()
	held := slots.held[hop.String()]
	slots.mu.Unlock()
	if held == 0 || held > 2 {
		t.Errorf("%d slots held by idle connections, want 1 or 2", held)
	}
	d.Close()
	slots.mu.Lock()
	defer slots.mu.Unlock()
	if slots.held[hop.String()] != 0 {
		t.Errorf("%d slots still held after Close", slots.held[hop.String()])
	}
}

// A cluster that grants no slot defers the message (not the next hop).
func TestSlotRefusedDefers(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	slots := newCountingSlots()
	slots.fail = errors.New("no quorum")
	opts := testOptions()
	opts.Slots = slots
	res := deliver(t, opts, smartHop(sink.Addr()), message("Subject: s\r\n\r\nx\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.3.0")
	if res[0].Connection {
		t.Error("a refused slot marked the next hop unreachable")
	}
	if n := sink.Connections(); n != 0 {
		t.Errorf("dialled %d times without a slot", n)
	}
}
