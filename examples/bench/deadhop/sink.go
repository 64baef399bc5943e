package main

import (
	"net"
	"strings"
	"sync"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

// sink is the next hop brought back: a minimal SMTP server (RFC 5321,
// 8BITMIME only, so no pipelining) that accepts every transaction and
// counts each message by its Message-ID (msgID), checking that it came
// for its own recipient. A trimmed variant of examples/bench/relaybench's
// sink with a counter per message instead of a map, for a million.
type sink struct {
	ln net.Listener

	mu         sync.Mutex
	count      []uint8 // deliveries of message i (saturating)
	unique     int
	duplicates int
	foreign    int // a Message-ID not ours, or a recipient not the message's
	conns      int
	done       chan struct{} // closed when every message arrived
	first      time.Time
	last       time.Time
	delay      time.Duration // before each message's reply (deadhop -slow)
}

func startSink(addr string, n int) (*sink, error) { return startSlowSink(addr, n, 0) }

// startSlowSink is startSink for a next hop that answers each message's
// end of data only after delay (deadhop -slow).
func startSlowSink(addr string, n int, delay time.Duration) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, count: make([]uint8, n), done: make(chan struct{}), delay: delay}
	go s.serve()
	return s, nil
}

func (s *sink) close() { s.ln.Close() }

type sinkCounts struct {
	unique, duplicates, foreign, conns int
	first, last                        time.Time
}

func (s *sink) counts() sinkCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sinkCounts{s.unique, s.duplicates, s.foreign, s.conns, s.first, s.last}
}

// missing lists up to max indexes of messages that never arrived, and
// their number.
func (s *sink) missing(max int) ([]int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var some []int
	n := 0
	for i, c := range s.count {
		if c == 0 {
			n++
			if len(some) < max {
				some = append(some, i)
			}
		}
	}
	return some, n
}

func (s *sink) record(id string, rcpts []string) {
	i := parseMsgID(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.first.IsZero() {
		s.first = now
	}
	if i < 0 || i >= len(s.count) || len(rcpts) != 1 || !strings.EqualFold(rcpts[0], rcptOf(i)) {
		s.foreign++
		return
	}
	if s.count[i] < 255 {
		s.count[i]++
	}
	if s.count[i] > 1 {
		s.duplicates++
		return
	}
	s.unique++
	s.last = now
	if s.unique == len(s.count) {
		close(s.done)
	}
}

func (s *sink) serve() {
	benchkit.ServeSMTP(s.ln, "sink.deadhop.test", func() {
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
	}, func(rcpts []string, id string) {
		time.Sleep(s.delay) // a slow next hop: the reply waits
		s.record(id, rcpts)
	})
}
