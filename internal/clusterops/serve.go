package clusterops

// The serving side: requests from the other hubs, answered by this hub's
// own ops.Queue.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"hubd/hub/ops"
)

// Bounds of the serving side.
const (
	maxServing   = 16               // requests answered at once; the next wait
	maxSessions  = 64               // chunked replies in progress
	sessionIdle  = 30 * time.Second // a session without a request this long is closed
	serveTimeout = DefaultActionTimeout
)

// serving is the serving side's state.
type serving struct {
	sub    *nats.Subscription
	sem    chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
	// sessions are the chunked replies in progress, by token; a session
	// taken out by the request reading it is absent meanwhile.
	sessions map[string]*session
	janitor  chan struct{} // closed when the janitor returned
}

// session is what is left of a chunked reply.
type session struct {
	r    io.Reader
	c    io.Closer // nil for a JSON reply
	used time.Time
}

func (s *session) close() {
	if s.c != nil {
		s.c.Close()
	}
}

// Serve answers the other hubs' requests (hubd.ops.<node>.*) until Close.
func (q *Queue) Serve() error {
	s := &q.srv
	s.sem = make(chan struct{}, maxServing)
	s.stop = make(chan struct{})
	s.sessions = map[string]*session{}
	s.janitor = make(chan struct{})
	sub, err := q.nc.Subscribe(subjectPrefix+q.node+".*", q.dispatch)
	if err != nil {
		return fmt.Errorf("clusterops: subscribe to %s%s.*: %w", subjectPrefix, q.node, err)
	}
	// The subscription is in place on the server once the connection
	// has flushed it: requests from then on are answered.
	if err := q.nc.FlushTimeout(q.o.Timeout); err != nil {
		sub.Unsubscribe()
		return fmt.Errorf("clusterops: subscribe to %s%s.*: %w", subjectPrefix, q.node, err)
	}
	s.mu.Lock()
	s.sub = sub
	s.mu.Unlock()
	go q.expire()
	return nil
}

// Close stops serving: no new request is taken, those being answered
// finish, and the sessions left are closed. Idempotent; a Queue that never
// served has nothing to stop.
func (q *Queue) Close() error {
	s := &q.srv
	s.mu.Lock()
	if s.closed || s.sub == nil {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	close(s.stop)
	s.wg.Wait()
	<-s.janitor
	s.mu.Lock()
	for tok, ss := range s.sessions {
		ss.close()
		delete(s.sessions, tok)
	}
	s.mu.Unlock()
	return err
}

// dispatch is the subscription's handler: each request is answered in a
// goroutine of its own, at most maxServing at once.
func (q *Queue) dispatch(m *nats.Msg) {
	s := &q.srv
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	select {
	case s.sem <- struct{}{}:
	case <-s.stop:
		s.wg.Done()
		return
	}
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sem }()
		q.serve(m)
	}()
}

// serve answers one request.
func (q *Queue) serve(m *nats.Msg) {
	method := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	var args request
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &args); err != nil {
			q.replyError(m, fmt.Errorf("bad request to %s: %v", method, err))
			return
		}
	}
	// Stop a little before the requester gives up, so that it hears why.
	timeout := serveTimeout
	if ms, err := strconv.ParseInt(m.Header.Get(hdrTimeout), 10, 64); err == nil && ms > 0 {
		d := time.Duration(ms) * time.Millisecond
		timeout = min(timeout, d-min(d/10, 250*time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l := q.local
	var v any
	var err error
	switch method {
	case mQueues:
		v, err = l.Queues(ctx)
	case mMessages:
		var f ops.MessageFilter
		if args.Filter != nil {
			f = *args.Filter
		}
		v, err = l.Messages(ctx, f)
	case mMessage:
		v, err = l.Message(ctx, args.ID)
	case mOpen:
		rc, err := l.OpenMessage(ctx, args.ID)
		if err != nil {
			q.replyError(m, err)
			return
		}
		q.replyStream(m, rc, rc)
		return
	case mMore:
		q.replyMore(m, args.Session)
		return
	case mDone:
		q.dropSession(args.Session)
		v = struct{}{}
	case mHold:
		v, err = struct{}{}, l.Hold(ctx, args.ID)
	case mRelease:
		v, err = struct{}{}, l.Release(ctx, args.ID)
	case mRetry:
		v, err = struct{}{}, l.Retry(ctx, args.ID)
	case mDelete:
		v, err = struct{}{}, l.Delete(ctx, args.ID, args.NDR)
	case mRetryQueue:
		var n int
		n, err = l.RetryQueue(ctx, args.Name, args.Resubmit)
		v = countReply{Count: n}
	case mSuspendQueue:
		v, err = countReply{}, l.SuspendQueue(ctx, args.Name)
	case mResumeQueue:
		v, err = countReply{}, l.ResumeQueue(ctx, args.Name)
	default:
		err = fmt.Errorf("unknown request %q", method)
	}
	if err != nil {
		q.replyError(m, err)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		q.replyError(m, err)
		return
	}
	if len(b) <= q.chunk {
		q.respond(m, b, "")
		return
	}
	q.replyStream(m, bytes.NewReader(b), nil)
}

// respond sends data, with the session of the rest if any.
func (q *Queue) respond(m *nats.Msg, data []byte, more string) {
	if m.Reply == "" {
		return
	}
	r := nats.NewMsg(m.Reply)
	r.Data = data
	if more != "" {
		r.Header.Set(hdrMore, more)
	}
	if err := m.RespondMsg(r); err != nil {
		q.log.Warn("cluster request not answered", "subject", m.Subject, "err", err)
	}
}

// replyError answers with err and its kind.
func (q *Queue) replyError(m *nats.Msg, err error) {
	if m.Reply == "" {
		return
	}
	r := nats.NewMsg(m.Reply)
	kind := kindOf(err)
	r.Header.Set(hdrError, cmp.Or(kind, "error"))
	r.Data, _ = json.Marshal(errorReply{Error: err.Error(), Kind: kind})
	if err := m.RespondMsg(r); err != nil {
		q.log.Warn("cluster request not answered", "subject", m.Subject, "err", err)
	}
}

// replyStream answers with the first chunk of r, and keeps the rest in a
// session when there is more; c (if any) is closed once r is done.
func (q *Queue) replyStream(m *nats.Msg, r io.Reader, c io.Closer) {
	ss := &session{r: r, c: c}
	q.sendChunk(m, ss, "")
}

// replyMore answers with the next chunk of a session.
func (q *Queue) replyMore(m *nats.Msg, tok string) {
	s := &q.srv
	s.mu.Lock()
	ss := s.sessions[tok]
	delete(s.sessions, tok)
	s.mu.Unlock()
	if ss == nil {
		q.replyError(m, fmt.Errorf("no transfer %q here (it ended, or was idle over %s)", tok, sessionIdle))
		return
	}
	q.sendChunk(m, ss, tok)
}

// sendChunk reads the next chunk of ss and answers with it; when more may
// follow, ss is kept under tok (a new token when tok is "").
func (q *Queue) sendChunk(m *nats.Msg, ss *session, tok string) {
	buf := make([]byte, q.chunk)
	n, err := io.ReadFull(ss.r, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		ss.close()
		q.respond(m, buf[:n], "")
		return
	case err != nil:
		ss.close()
		q.replyError(m, err)
		return
	}
	if tok == "" {
		var b [16]byte
		rand.Read(b[:])
		tok = hex.EncodeToString(b[:])
	}
	s := &q.srv
	s.mu.Lock()
	if s.closed || len(s.sessions) >= maxSessions {
		closed := s.closed
		s.mu.Unlock()
		ss.close()
		if closed {
			q.replyError(m, errors.New("the hub is stopping"))
		} else {
			q.replyError(m, fmt.Errorf("too many transfers in progress (%d); try again", maxSessions))
		}
		return
	}
	ss.used = time.Now()
	s.sessions[tok] = ss
	s.mu.Unlock()
	q.respond(m, buf[:n], tok)
}

// dropSession ends a session the requester gave up.
func (q *Queue) dropSession(tok string) {
	s := &q.srv
	s.mu.Lock()
	ss := s.sessions[tok]
	delete(s.sessions, tok)
	s.mu.Unlock()
	if ss != nil {
		ss.close()
	}
}

// expire closes the sessions idle over sessionIdle, until Close.
func (q *Queue) expire() {
	s := &q.srv
	defer close(s.janitor)
	tick := time.NewTicker(sessionIdle / 3)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-tick.C:
			var idle []*session
			s.mu.Lock()
			for tok, ss := range s.sessions {
				if now.Sub(ss.used) > sessionIdle {
					idle = append(idle, ss)
					delete(s.sessions, tok)
				}
			}
			s.mu.Unlock()
			for _, ss := range idle {
				ss.close()
			}
		}
	}
}
