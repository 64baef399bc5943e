package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"
)

// sourceAddrs returns n distinct loopback addresses to dial from, starting
// at 127.0.0.2 and skipping those ending in .0 and .255. Linux routes all of
// 127.0.0.0/8 to lo, so any of them can be bound without configuring it.
func sourceAddrs(n int) []net.IP {
	out := make([]net.IP, 0, n)
	for v := uint32(127<<24 | 2); len(out) < n && v < 128<<24-1; v++ {
		if b := v & 0xff; b == 0 || b == 255 {
			continue
		}
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, v)
		out = append(out, ip)
	}
	return out
}

// openResult is what opening the idle sessions gave.
type openResult struct {
	conns    []net.Conn // greeted, EHLO answered, now idle
	refused  int        // greeted with something other than 220
	failed   int        // could not connect, or no answer
	replies  map[string]int
	firstErr string
	elapsed  time.Duration // first dial to the last EHLO reply
}

// openIdle opens n SMTP sessions to addr, the i-th from sources[i %
// len(sources)], parallel at a time. Each reads the greeting, says EHLO,
// reads the reply and then stays idle. A greeting other than 220 (a
// connection limit's 421) is counted in replies by its text.
func openIdle(addr string, n int, sources []net.IP, parallel int) openResult {
	res := openResult{replies: map[string]int{}}
	var mu sync.Mutex
	conns := make([]net.Conn, n)
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, refusal, err := openOne(addr, sources[i%len(sources)])
				mu.Lock()
				switch {
				case err != nil:
					res.failed++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
				case refusal != "":
					res.refused++
					res.replies[refusal]++
				default:
					conns[i] = c
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, c := range conns {
		if c != nil {
			res.conns = append(res.conns, c)
		}
	}
	return res
}

// openOne dials addr from src and returns the idle connection, or the reply
// that refused it, or an error.
func openOne(addr string, src net.IP) (net.Conn, string, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 30 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	r := bufio.NewReaderSize(c, 512)
	text, code, err := readReply(c, r)
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("greeting from %s: %w", src, err)
	}
	if code != 220 {
		c.Close()
		return nil, strings.TrimSpace(text), nil
	}
	if text, code, err = command(c, r, "EHLO idle.idleconns.test"); err != nil {
		c.Close()
		return nil, "", fmt.Errorf("EHLO from %s: %w", src, err)
	} else if code != 250 {
		c.Close()
		return nil, "", fmt.Errorf("EHLO from %s: %q", src, strings.TrimSpace(text))
	}
	if r.Buffered() > 0 {
		c.Close()
		return nil, "", fmt.Errorf("from %s: unexpected bytes after the EHLO reply", src)
	}
	return c, "", nil
}

// closeAll closes conns, parallel at a time, without QUIT: to hubd the
// clients simply go away.
func closeAll(conns []net.Conn, parallel int) {
	var wg sync.WaitGroup
	per := (len(conns) + parallel - 1) / parallel
	for lo := 0; lo < len(conns); lo += per {
		part := conns[lo:min(lo+per, len(conns))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range part {
				c.Close()
			}
		}()
	}
	wg.Wait()
}

const ioTimeout = 30 * time.Second

// readReply reads one (possibly multi-line) SMTP reply.
func readReply(c net.Conn, r *bufio.Reader) (string, int, error) {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	defer c.SetReadDeadline(time.Time{})
	var text strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return text.String(), 0, err
		}
		text.WriteString(line)
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	var code int
	if _, err := fmt.Sscanf(text.String(), "%d", &code); err != nil {
		return text.String(), 0, fmt.Errorf("not an SMTP reply: %q", text.String())
	}
	return text.String(), code, nil
}

func command(c net.Conn, r *bufio.Reader, line string) (string, int, error) {
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write([]byte(line + "\r\n")); err != nil {
		return "", 0, err
	}
	return readReply(c, r)
}

// healthCheck runs one whole session: 220, EHLO → 250, QUIT → 221.
func healthCheck(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, step := range []struct {
		cmd  string
		want int
	}{{"", 220}, {"EHLO health.idleconns.test", 250}, {"QUIT", 221}} {
		var text string
		var code int
		if step.cmd == "" {
			text, code, err = readReply(c, r)
		} else {
			text, code, err = command(c, r, step.cmd)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", or(step.cmd, "greeting"), err)
		}
		if code != step.want {
			return fmt.Errorf("%s: want %d, got %q", or(step.cmd, "greeting"), step.want, strings.TrimSpace(text))
		}
	}
	return nil
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// sortedReplies lists refusal replies, most frequent first.
func sortedReplies(m map[string]int) []string {
	f := make(map[string]float64, len(m))
	for k, v := range m {
		f[fmt.Sprintf("%q", k)] = float64(v)
	}
	return sortedCounts(f)
}

// sortedCounts lists "count × key", most frequent first.
func sortedCounts(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%.0f × %s", m[k], k)
	}
	return out
}
