package smtpout

import (
	"sync"
	"time"

	"hubd/hub/delivery"
)

// pool holds idle connections between transactions, so that several
// messages for one next hop share a connection (as Exchange's and Postfix's
// connection caches do), saving the TCP, greeting, EHLO and TLS round trips.
//
// Connections are kept per NextHop value and never lent to another one: two
// hops may differ in TLS policy, EHLO name or smart host list even when they
// reach the same address. Each entry remembers the address it was dialled
// on. An idle connection is QUIT and closed when its timer fires
// (Options.IdleTimeout) or on Close; a connection that has carried
// MaxMessagesPerConnection transactions is never pooled.
type pool struct {
	idleTimeout time.Duration
	quit        func(*conn) // QUIT and close, bounded in time

	mu     sync.Mutex
	idle   map[delivery.NextHop][]*conn
	closed bool
	wg     sync.WaitGroup // QUITs started by timers and Close
}

func newPool(idleTimeout time.Duration, quit func(*conn)) *pool {
	return &pool{idleTimeout: idleTimeout, quit: quit, idle: map[delivery.NextHop][]*conn{}}
}

// take removes and returns the most recently used idle connection of hop
// that ok accepts (a message's TLS policy decides which may carry it), or
// nil. The most recent one is the least likely to have been timed out by
// the server.
func (p *pool) take(hop delivery.NextHop, ok func(*conn) bool) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[hop]
	i := len(list) - 1
	for i >= 0 && !ok(list[i]) {
		i--
	}
	if i < 0 {
		return nil
	}
	c := list[i]
	p.removeLocked(hop, c)
	// A timer that already fired finds c gone from the pool and leaves it.
	c.idle.Stop()
	c.idle = nil
	return c
}

// put makes c available to the next Deliver for hop, or QUITs it when the
// pool is closed.
func (p *pool) put(hop delivery.NextHop, c *conn) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.quit(c)
		return
	}
	p.idle[hop] = append(p.idle[hop], c)
	c.idle = time.AfterFunc(p.idleTimeout, func() { p.expire(hop, c) })
	p.mu.Unlock()
}

// expire is c's idle timer: if c is still idle, it leaves the pool and is
// QUIT. The WaitGroup is raised under the lock, so Close (which takes the
// lock before waiting) either sees c still pooled or waits for this QUIT.
func (p *pool) expire(hop delivery.NextHop, c *conn) {
	p.mu.Lock()
	if !p.removeLocked(hop, c) {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	p.quit(c)
}

func (p *pool) removeLocked(hop delivery.NextHop, c *conn) bool {
	list := p.idle[hop]
	for i, x := range list {
		if x == c {
			list = append(list[:i], list[i+1:]...)
			if len(list) == 0 {
				delete(p.idle, hop)
			} else {
				p.idle[hop] = list
			}
			return true
		}
	}
	return false
}

// close QUITs every idle connection (in parallel), waits for those and for
// QUITs already started by timers, and makes later puts QUIT at once.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []*conn
	for _, list := range p.idle {
		for _, c := range list {
			c.idle.Stop()
			all = append(all, c)
		}
	}
	p.idle = map[delivery.NextHop][]*conn{}
	p.wg.Add(len(all))
	p.mu.Unlock()
	for _, c := range all {
		go func() {
			defer p.wg.Done()
			p.quit(c)
		}()
	}
	p.wg.Wait()
}

// size is the number of idle connections (for tests).
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}
