package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
)

// deadDomain is where every message goes; the send connector routes it to
// a smart host where nothing listens.
const deadDomain = "dead.test"

// msgID is the Message-ID of message i; the sink recovers i from it.
func msgID(i int) string { return "<" + strconv.Itoa(i) + ".deadhop@bench.test>" }

// parseMsgID is msgID's inverse; -1 when id is not one of ours.
func parseMsgID(id string) int {
	id = strings.TrimSpace(id)
	if !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, ".deadhop@bench.test>") {
		return -1
	}
	i, err := strconv.Atoi(id[1 : len(id)-len(".deadhop@bench.test>")])
	if err != nil || i < 0 {
		return -1
	}
	return i
}

func rcptOf(i int) string { return "u" + strconv.Itoa(i) + "@" + deadDomain }

// filler is the part of every body after its headers: lines of 76
// characters and CRLF, so that the whole message is about size bytes.
func filler(size int) []byte {
	var b bytes.Buffer
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()[:max(0, size-200)/78*78]
}

// header is message i's header section (about 200 bytes).
func header(i int) string {
	return "From: sender@bench.test\r\nTo: " + rcptOf(i) + "\r\nSubject: deadhop " + strconv.Itoa(i) +
		"\r\nMessage-ID: " + msgID(i) + "\r\nDate: Sat, 05 Dec 2026 12:00:00 +0000\r\n\r\n"
}

// fillResult is what filling the spool took.
type fillResult struct {
	n       int
	bytes   int64 // bodies
	elapsed time.Duration
}

// fill puts n messages into a fresh log spool at dir directly through the
// engine, from workers goroutines (group commit shares the fdatasyncs),
// each message shaped as Transport.Submit shapes one: the envelope as the
// receive connector gives it, one state per recipient, Queued, with the
// envelope recipient as its DSN recipient.
func fill(ctx context.Context, dir string, n, size, workers int, progress io.Writer) (fillResult, error) {
	s, err := queue.OpenLog(queue.LogOptions{Dir: dir})
	if err != nil {
		return fillResult{}, err
	}
	body := filler(size)
	var next, done atomic.Int64
	var written atomic.Int64
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				fmt.Fprintf(progress, "  fill: %d of %d (%.0f/s)\n", d, n, float64(d)/time.Since(start).Seconds())
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				now := time.Now()
				rcpt := hub.Recipient{Address: rcptOf(i)}
				m := &queue.Message{
					Envelope: hub.Envelope{
						From:       "sender@bench.test",
						Recipients: []hub.Recipient{rcpt},
						ReceivedAt: now,
						Connector:  "deadhop",
						ClientAddr: "127.0.0.1:40000",
						ClientHelo: "client.bench.test",
					},
					Arrived: now,
				}
				m.Recipients = []queue.RecipientState{{Address: rcpt.Address, DSN: rcpt, Status: queue.Queued}}
				err := s.Put(ctx, m, io.MultiReader(strings.NewReader(header(i)), bytes.NewReader(body)))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("Put of message %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				written.Add(m.Size)
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	elapsed := time.Since(start)
	if err := s.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return fillResult{n: int(done.Load()), bytes: written.Load(), elapsed: elapsed}, firstErr
}
