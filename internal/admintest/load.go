package admintest

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"
)

// Load is SMTP clients sending one message after another over new
// sessions until Stop: the reload-under-load tests count what they saw.
type Load struct {
	addr, rcpt string
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu       sync.Mutex
	sent     int
	errs     []string
	banners  []string // the greeting of every session, in the order each client saw them
	sessions int
}

// StartLoad starts n clients sending to rcpt at addr.
func StartLoad(addr, rcpt string, n int) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{addr: addr, rcpt: rcpt, cancel: cancel}
	for i := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var last string
			for ctx.Err() == nil {
				banner, err := l.session(i)
				l.mu.Lock()
				l.sessions++
				if err != nil {
					l.errs = append(l.errs, fmt.Sprintf("client %d: %v", i, err))
				} else {
					l.sent++
					if banner != last {
						l.banners = append(l.banners, fmt.Sprintf("%d %s", i, banner))
						last = banner
					}
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// Sent returns the messages accepted so far.
func (l *Load) Sent() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent
}

// Stop ends the clients after their current session and returns the
// sessions run, the messages accepted, every error, and each client's
// banner changes ("<client> <banner>").
func (l *Load) Stop() (sessions, sent int, errs, banners []string) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sessions, l.sent, l.errs, l.banners
}

// session runs one session with one message and returns its greeting.
func (l *Load) session(i int) (string, error) {
	c, err := net.DialTimeout("tcp", l.addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	tp := textproto.NewConn(c)
	_, banner, err := tp.ReadResponse(220)
	if err != nil {
		return "", fmt.Errorf("greeting: %w", err)
	}
	steps := []struct {
		cmd  string
		code int
	}{
		{"EHLO load.test", 250},
		{"MAIL FROM:<load@remote.test>", 250},
		{"RCPT TO:<" + l.rcpt + ">", 250},
		{"DATA", 354},
		{fmt.Sprintf("Subject: load %d\r\n\r\nbody\r\n.", i), 250},
		{"QUIT", 221},
	}
	for _, s := range steps {
		if err := tp.PrintfLine("%s", s.cmd); err != nil {
			return banner, fmt.Errorf("%s: %w", firstLine(s.cmd), err)
		}
		if _, msg, err := tp.ReadResponse(s.code); err != nil {
			return banner, fmt.Errorf("%s: %v %s", firstLine(s.cmd), err, msg)
		}
	}
	return banner, nil
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\r\n")
	return first
}
