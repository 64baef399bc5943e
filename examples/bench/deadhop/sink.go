package main

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"sync"
	"time"
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
}

func startSink(addr string, n int) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, count: make([]uint8, n), done: make(chan struct{})}
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
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		go s.session(c)
	}
}

// session answers one SMTP client until QUIT or EOF.
func (s *sink) session(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriter(c)
	reply := func(line string) bool {
		w.WriteString(line + "\r\n")
		return w.Flush() == nil
	}
	if !reply("220 sink.deadhop.test ESMTP deadhop sink") {
		return
	}
	var rcpts []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimSpace(line)
		verb := strings.ToUpper(cmd)
		if i := strings.IndexAny(verb, " :"); i >= 0 {
			verb = verb[:i]
		}
		var ok bool
		switch verb {
		case "EHLO":
			ok = reply("250-sink.deadhop.test\r\n250 8BITMIME")
		case "HELO":
			ok = reply("250 sink.deadhop.test")
		case "MAIL":
			rcpts = rcpts[:0]
			ok = reply("250 2.1.0 OK")
		case "RCPT":
			rcpts = append(rcpts, pathOf(cmd))
			ok = reply("250 2.1.5 OK")
		case "RSET":
			rcpts = rcpts[:0]
			ok = reply("250 2.0.0 OK")
		case "NOOP":
			ok = reply("250 2.0.0 OK")
		case "DATA":
			if !reply("354 End data with <CR><LF>.<CR><LF>") {
				return
			}
			id, err := readMessage(r)
			if err != nil {
				return
			}
			s.record(id, rcpts)
			rcpts = rcpts[:0]
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

// pathOf is the address in "RCPT TO:<a> params".
func pathOf(cmd string) string {
	i, j := strings.IndexByte(cmd, '<'), strings.IndexByte(cmd, '>')
	if i < 0 || j < i {
		return ""
	}
	return cmd[i+1 : j]
}

// readMessage reads a DATA body up to the lone "." line and returns its
// Message-ID header's value ("" if it has none). ReadSlice keeps a body
// of a million messages from allocating per line.
func readMessage(r *bufio.Reader) (string, error) {
	id, inHeader := "", true
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			inHeader = inHeader && len(line) == 0 // a 64 KiB line: no header of ours
			continue
		}
		if err != nil {
			return "", err
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 1 && trimmed[0] == '.' {
			return id, nil
		}
		if !inHeader {
			continue
		}
		if len(trimmed) == 0 {
			inHeader = false
			continue
		}
		if len(trimmed) > 11 && strings.EqualFold(string(trimmed[:11]), "message-id:") {
			id = strings.TrimSpace(string(trimmed[11:]))
		}
	}
}
