package main

import (
	"net"
	"sync"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

// sink is the next hop of both MTAs: a minimal SMTP server (RFC 5321) that
// accepts every transaction and counts messages by their Message-ID header,
// so a message delivered twice is counted once and reported as a duplicate.
// It offers no extensions beyond 8BITMIME, so neither MTA pipelines to it
// and both see the same server.
type sink struct {
	ln net.Listener

	mu         sync.Mutex
	seen       map[string]bool
	duplicates int
	want       int           // signal done when len(seen) reaches want
	done       chan struct{} // closed when want unique messages arrived
	lastAt     time.Time     // arrival of the last new message
}

func startSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln}
	s.reset(0)
	go s.serve()
	return s, nil
}

func (s *sink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// reset forgets every message and arms done for want unique messages.
func (s *sink) reset(want int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = make(map[string]bool)
	s.duplicates = 0
	s.want = want
	s.done = make(chan struct{})
	s.lastAt = time.Time{}
}

// expect changes the number of unique messages that closes done (the load may
// have had fewer messages accepted than it sent).
func (s *sink) expect(want int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.want = want
	s.checkDone()
	return s.done
}

func (s *sink) checkDone() {
	if s.want > 0 && len(s.seen) >= s.want {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
}

func (s *sink) counts() (unique, duplicates int, lastAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen), s.duplicates, s.lastAt
}

func (s *sink) record(messageID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[messageID] {
		s.duplicates++
		return
	}
	s.seen[messageID] = true
	s.lastAt = time.Now()
	s.checkDone()
}

func (s *sink) close() { s.ln.Close() }

func (s *sink) serve() {
	benchkit.ServeSMTP(s.ln, "sink.relaybench.test", nil, func(_ []string, id string) { s.record(id) })
}
