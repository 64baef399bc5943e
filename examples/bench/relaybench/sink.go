package main

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"time"
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
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.session(c)
	}
}

// session answers one SMTP client until QUIT or EOF. Every reply carries an
// RFC 3463 enhanced status code, as any reply of ours does.
func (s *sink) session(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriter(c)
	reply := func(line string) bool {
		w.WriteString(line + "\r\n")
		return w.Flush() == nil
	}
	if !reply("220 sink.relaybench.test ESMTP relaybench sink") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(line))
		if i := strings.IndexAny(verb, " :"); i >= 0 {
			verb = verb[:i]
		}
		var ok bool
		switch verb {
		case "EHLO":
			ok = reply("250-sink.relaybench.test\r\n250 8BITMIME")
		case "HELO":
			ok = reply("250 sink.relaybench.test")
		case "MAIL", "RCPT", "RSET", "NOOP":
			ok = reply("250 2.0.0 OK")
		case "DATA":
			if !reply("354 End data with <CR><LF>.<CR><LF>") {
				return
			}
			id, err := readMessage(r)
			if err != nil {
				return
			}
			s.record(id)
			ok = reply("250 2.0.0 Ok: queued")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			ok = reply("502 5.5.2 Command not recognized")
		}
		if !ok {
			return
		}
	}
}

// readMessage reads a DATA body up to the lone "." line (RFC 5321 §4.1.1.4)
// and returns its Message-ID header's value ("" if it has none).
func readMessage(r *bufio.Reader) (string, error) {
	id, inHeader := "", true
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "." {
			return id, nil
		}
		if !inHeader {
			continue
		}
		if trimmed == "" {
			inHeader = false
			continue
		}
		if len(trimmed) > 11 && strings.EqualFold(trimmed[:11], "message-id:") {
			id = strings.TrimSpace(trimmed[11:])
		}
	}
}
