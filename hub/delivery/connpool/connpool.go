// Package connpool keeps a deliverer's idle client connections between
// delivery attempts, so that several messages for one next hop share a
// connection (as Exchange's and Postfix's connection caches do) and save the
// connect, greeting, EHLO/LHLO and TLS round trips. The SMTP deliverer
// (hub/delivery/smtpout) and the LMTP deliverer (hub/delivery/lmtp) share
// it; each brings its own connection type and its own way of saying
// goodbye.
//
// What it promises:
//
//   - Connections are kept per delivery.NextHop value and only ever handed
//     back for an equal one: two hops may differ in TLS policy, EHLO name or
//     server list even when they reach the same address.
//   - Take hands out the most recently used idle connection (the least
//     likely to have been timed out by the server) that the caller's filter
//     accepts, and removes it from the pool: one user at a time.
//   - An idle connection is given to the quit function (which says QUIT and
//     closes it) when it has been idle for the idle timeout, or on Close;
//     never while a caller holds it. Close waits for every quit it started,
//     and for quits already started by idle timers, before it returns.
//   - After Close, Put quits the connection at once: the pool stays usable,
//     without reuse.
//
// How many messages a connection may carry, and whether a connection is fit
// to be put back at all (a transaction that ended cleanly), is the
// deliverer's decision, not the pool's.
package connpool

import (
	"sync"
	"time"

	"hubd/hub/delivery"
)

// Pool holds idle connections of type C (a pointer type in practice).
type Pool[C comparable] struct {
	idleTimeout time.Duration
	quit        func(C) // QUIT and close, bounded in time

	mu     sync.Mutex
	idle   map[delivery.NextHop][]*entry[C]
	closed bool
	wg     sync.WaitGroup // quits started by timers and Close
}

// entry is one idle connection and the timer that retires it.
type entry[C comparable] struct {
	conn  C
	timer *time.Timer
}

// New returns a pool whose idle connections are handed to quit after
// idleTimeout.
func New[C comparable](idleTimeout time.Duration, quit func(C)) *Pool[C] {
	return &Pool[C]{idleTimeout: idleTimeout, quit: quit, idle: map[delivery.NextHop][]*entry[C]{}}
}

// Take removes and returns the most recently used idle connection of hop
// that ok accepts (nil ok accepts any), and true; or the zero C and false.
func (p *Pool[C]) Take(hop delivery.NextHop, ok func(C) bool) (C, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[hop]
	i := len(list) - 1
	for i >= 0 && ok != nil && !ok(list[i].conn) {
		i--
	}
	if i < 0 {
		var zero C
		return zero, false
	}
	e := list[i]
	p.removeLocked(hop, e)
	// A timer that already fired finds e gone from the pool and leaves it.
	e.timer.Stop()
	return e.conn, true
}

// Put makes c available to the next Take for hop, or quits it when the
// pool is closed.
func (p *Pool[C]) Put(hop delivery.NextHop, c C) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.quit(c)
		return
	}
	e := &entry[C]{conn: c}
	p.idle[hop] = append(p.idle[hop], e)
	e.timer = time.AfterFunc(p.idleTimeout, func() { p.expire(hop, e) })
	p.mu.Unlock()
}

// expire is e's idle timer: if e is still idle, it leaves the pool and is
// quit. The WaitGroup is raised under the lock, so Close (which takes the
// lock before waiting) either sees e still pooled or waits for this quit.
func (p *Pool[C]) expire(hop delivery.NextHop, e *entry[C]) {
	p.mu.Lock()
	if !p.removeLocked(hop, e) {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	p.quit(e.conn)
}

func (p *Pool[C]) removeLocked(hop delivery.NextHop, e *entry[C]) bool {
	list := p.idle[hop]
	for i, x := range list {
		if x == e {
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

// Close quits every idle connection (in parallel), waits for those and for
// quits already started by timers, and makes later Puts quit at once.
func (p *Pool[C]) Close() {
	p.mu.Lock()
	p.closed = true
	var all []*entry[C]
	for _, list := range p.idle {
		for _, e := range list {
			e.timer.Stop()
			all = append(all, e)
		}
	}
	p.idle = map[delivery.NextHop][]*entry[C]{}
	p.wg.Add(len(all))
	p.mu.Unlock()
	for _, e := range all {
		go func() {
			defer p.wg.Done()
			p.quit(e.conn)
		}()
	}
	p.wg.Wait()
}

// Len is the number of idle connections.
func (p *Pool[C]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}
