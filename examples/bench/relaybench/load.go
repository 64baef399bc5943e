package main

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadOptions describe one run's load.
type loadOptions struct {
	addr       string // host:port of the MTA under test
	sessions   int    // concurrent SMTP clients
	count      int    // messages in total
	size       int    // bytes per message, headers included
	connPerMsg bool   // one connection (EHLO, one transaction, QUIT) per message
	runID      string // goes into every Message-ID, so runs never mix
}

// loadResult is what the clients saw.
type loadResult struct {
	accepted   int             // transactions answered 250 after DATA
	failed     int             // transactions refused or cut off
	firstErr   string          // the first failure, for the report
	latencies  []time.Duration // per accepted message: end of DATA sent → 250 read
	start      time.Time
	lastAccept time.Time // the last 250 after DATA
}

// runLoad runs opts.sessions clients that share opts.count messages. Without
// connPerMsg a client keeps its session and sends RSET between transactions
// (RFC 5321 §4.1.1.5), as a persistent submitter would. Commands are sent one
// at a time (no PIPELINING), so each MTA sees the same dialogue.
func runLoad(opts loadOptions) loadResult {
	var next atomic.Int64
	var mu sync.Mutex
	res := loadResult{start: time.Now()}
	var wg sync.WaitGroup
	for s := 0; s < opts.sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtpClient
			defer func() {
				if c != nil {
					c.quit()
				}
			}()
			for {
				n := int(next.Add(1))
				if n > opts.count {
					return
				}
				if c != nil {
					// A session that cannot RSET is dropped; message n goes
					// out on a new one.
					if err := c.cmd("RSET", 250); err != nil {
						c.close()
						c = nil
					}
				}
				if c == nil {
					var err error
					if c, err = dialSMTP(opts.addr); err != nil {
						mu.Lock()
						res.failed++
						if res.firstErr == "" {
							res.firstErr = err.Error()
						}
						mu.Unlock()
						c = nil
						continue
					}
				}
				lat, err := c.send(message(opts.runID, n, opts.size))
				now := time.Now()
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstErr == "" {
						res.firstErr = err.Error()
					}
				} else {
					res.accepted++
					res.latencies = append(res.latencies, lat)
					if now.After(res.lastAccept) {
						res.lastAccept = now
					}
				}
				mu.Unlock()
				if err != nil || opts.connPerMsg {
					if err == nil {
						c.quit()
					} else {
						c.close()
					}
					c = nil
				}
			}
		}()
	}
	wg.Wait()
	return res
}

// message builds message n of a run: a small RFC 5322 header with a unique
// Message-ID, then lines of 'x' up to size bytes in all (CRLF counted).
func message(runID string, n, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <a@source.relaybench.test>\r\nTo: <b@remote.relaybench.test>\r\n")
	fmt.Fprintf(&b, "Subject: relaybench %d\r\nMessage-ID: %s\r\n", n, messageID(runID, n))
	fmt.Fprintf(&b, "Date: %s\r\n\r\n", time.Now().Format(time.RFC1123Z))
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	if rest := size - b.Len() - 2; rest > 0 {
		b.WriteString(strings.Repeat("y", rest) + "\r\n")
	}
	return []byte(b.String())
}

func messageID(runID string, n int) string {
	return fmt.Sprintf("<%s.%d@relaybench.test>", runID, n)
}

// smtpClient is a bare SMTP client: net/smtp would hide the moment the 250
// after DATA arrives, which is the latency we measure.
type smtpClient struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

const ioTimeout = 60 * time.Second

func dialSMTP(addr string) (*smtpClient, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &smtpClient{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriterSize(conn, 64<<10)}
	if _, err := c.reply(220); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := c.cmd("EHLO source.relaybench.test", 250); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// reply reads one (possibly multi-line) reply and checks its code.
func (c *smtpClient) reply(want int) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var text string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		text += line
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	var code int
	if _, err := fmt.Sscanf(text, "%d", &code); err != nil || code != want {
		return text, fmt.Errorf("want %d, got %q", want, strings.TrimSpace(text))
	}
	return text, nil
}

func (c *smtpClient) cmd(line string, want int) error {
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	c.w.WriteString(line + "\r\n")
	if err := c.w.Flush(); err != nil {
		return err
	}
	_, err := c.reply(want)
	return err
}

// send runs one transaction and returns the time from the end of the data
// (the final ".") being written to the 250 being read. The body holds no line
// starting with ".", so no dot-stuffing is needed.
func (c *smtpClient) send(body []byte) (time.Duration, error) {
	for _, step := range []struct {
		line string
		want int
	}{{"MAIL FROM:<a@source.relaybench.test>", 250}, {"RCPT TO:<b@remote.relaybench.test>", 250}, {"DATA", 354}} {
		if err := c.cmd(step.line, step.want); err != nil {
			return 0, err
		}
	}
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	c.w.Write(body)
	c.w.WriteString(".\r\n")
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	sent := time.Now()
	if _, err := c.reply(250); err != nil {
		return 0, err
	}
	return time.Since(sent), nil
}

func (c *smtpClient) quit() {
	c.cmd("QUIT", 221)
	c.conn.Close()
}

func (c *smtpClient) close() { c.conn.Close() }
