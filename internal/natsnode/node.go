package natsnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"hubd/policy"
)

// DefaultConnectTimeout bounds Start's wait for JetStream when the queue
// block sets no connect timeout.
const DefaultConnectTimeout = 30 * time.Second

// pollInterval is how often Start asks whether JetStream is usable.
const pollInterval = 100 * time.Millisecond

// Node is hubd's handle on JetStream: the embedded nats-server when it runs
// one, and the connection the queue store uses. It is safe for concurrent
// use.
type Node struct {
	name    string
	q       policy.Queue
	log     *slog.Logger
	timeout time.Duration // the connect timeout: the default bound of Ensure*

	ns *server.Server // nil for an external cluster
	// The embedded node's two users, nkeys made at Start that never leave
	// the process. app, in the global account, is hubd's own in-process
	// connection, and the no-auth user of the client listener when the
	// queue block asks for one (anyone on q.Listen is app); sys, in the
	// system account, is what Status uses to ask the meta leader for its
	// view.
	app, sys nkeys.KeyPair

	nc     *nats.Conn
	js     jetstream.JetStream
	closed chan struct{} // closed by the connection's ClosedHandler
	// connErr is the last failure to (re)connect, for Start's error.
	connErr atomic.Pointer[error]

	closeOnce sync.Once
	closeErr  error
}

// Start starts the embedded node of q, or connects to the cluster q names,
// and returns once JetStream is usable (see the package documentation for
// what that guarantees). It waits at most q.ConnectTimeout
// (DefaultConnectTimeout when zero) and no longer than ctx. On error nothing
// is left running.
func Start(ctx context.Context, q policy.Queue, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if q.Engine != policy.QueueJetStream {
		return nil, fmt.Errorf("natsnode: queue engine %q is not %q", q.Engine, policy.QueueJetStream)
	}
	if q.Node == "" {
		return nil, errors.New("natsnode: the queue block names no node")
	}
	timeout := q.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	n := &Node{
		name:    q.Node,
		q:       q,
		log:     log,
		timeout: timeout,
		closed:  make(chan struct{}),
	}
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var err error
	if q.Embedded() {
		err = n.startEmbedded(ctx)
	} else {
		err = n.connectExternal()
	}
	if err == nil {
		n.js, err = jetstream.New(n.nc)
	}
	if err == nil {
		err = n.waitUsable(ctx, begin)
	}
	if err != nil {
		n.shutdown(false)
		return nil, err
	}
	return n, nil
}

// startEmbedded starts the in-process nats-server and connects to it.
func (n *Node) startEmbedded(ctx context.Context) error {
	q := n.q
	if q.StoreDir == "" {
		return errors.New("natsnode: the embedded node needs a store_dir")
	}
	var err error
	if n.app, err = nkeys.CreateUser(); err != nil {
		return err
	}
	if n.sys, err = nkeys.CreateUser(); err != nil {
		return err
	}
	appPub, _ := n.app.PublicKey()
	sysPub, _ := n.sys.PublicKey()
	sys := server.NewAccount(server.DEFAULT_SYSTEM_ACCOUNT)
	opts := &server.Options{
		ServerName:             q.Node,
		JetStream:              true,
		StoreDir:               q.StoreDir,
		SyncAlways:             q.SyncAlways,
		NoSigs:                 true, // hubd owns the process's signals
		DisableJetStreamBanner: true,
		Accounts:               []*server.Account{sys},
		SystemAccount:          server.DEFAULT_SYSTEM_ACCOUNT,
		// Nkeys rather than passwords: nats-server warns about plaintext
		// passwords at every start, and its no_auth_user does not work
		// with a bcrypt-hashed one (it compares the hash with itself).
		Nkeys: []*server.NkeyUser{
			{Nkey: appPub}, // the global account
			{Nkey: sysPub, Account: sys},
		},
		// A route to a peer that went away is retried every second;
		// nats-server's default logs every failure. Once a minute will do.
		ReconnectErrorReports: 60,
	}
	switch {
	case q.Listen != "":
		opts.Host, opts.Port, err = hostPort(q.Listen)
		if err != nil {
			return fmt.Errorf("natsnode: listen: %w", err)
		}
		opts.NoAuthUser = appPub
	case q.Cluster == nil:
		opts.DontListen = true // the in-process connection needs no port
	default:
		// nats-server 2.15.3 starts routing only once the client
		// listener is up: with DontListen a clustered server never
		// routes, and its Shutdown waits for the routing goroutine
		// forever. So a clustered node always listens for clients, on a
		// loopback port of the kernel's choosing that only the
		// in-process users' nkeys open, and that it does not
		// advertise to the cluster's clients.
		opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
		opts.Cluster.NoAdvertise = true
	}
	if c := q.Cluster; c != nil {
		opts.Cluster.Name = c.Name
		opts.Cluster.Host, opts.Cluster.Port, err = hostPort(c.Listen)
		if err != nil {
			return fmt.Errorf("natsnode: cluster listen: %w", err)
		}
		for _, r := range c.Routes {
			u, err := routeURL(r)
			if err != nil {
				return err
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("natsnode: embedded node %s: %w", q.Node, err)
	}
	logger := &serverLogger{log: n.log.With("component", "nats")}
	ns.SetLoggerV2(logger, false, false, false)
	n.ns = ns
	// Start recovers the JetStream store before it returns; the listeners
	// come up in goroutines, which ReadyForConnections waits for. The
	// server reports what stops it (a store it cannot open, a port in use)
	// only through its log's Fatalf, and carries on without it.
	ns.Start()
	if msg := logger.fatal(); msg != "" {
		return fmt.Errorf("natsnode: embedded node %s: %s", q.Node, msg)
	}
	if !ns.ReadyForConnections(remaining(ctx)) {
		if msg := logger.fatal(); msg != "" {
			return fmt.Errorf("natsnode: embedded node %s: %s", q.Node, msg)
		}
		return fmt.Errorf("natsnode: embedded node %s: listeners not ready (listen %q, cluster %q)",
			q.Node, q.Listen, clusterListen(q))
	}
	nc, err := nats.Connect("", append(n.connOptions(), nats.InProcessServer(ns), nkeyAuth(n.app))...)
	if err != nil {
		return fmt.Errorf("natsnode: in-process connection to %s: %w", q.Node, err)
	}
	n.nc = nc
	return nil
}

// connectExternal connects to the cluster's URLs. The connection retries
// in the background (RetryOnFailedConnect): a cluster that comes up while
// Start waits is found.
func (n *Node) connectExternal() error {
	q := n.q
	opts := n.connOptions()
	opts = append(opts, nats.RetryOnFailedConnect(true))
	if q.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(q.CredentialsFile))
	}
	if q.CAFile != "" {
		opts = append(opts, nats.RootCAs(q.CAFile))
	}
	if q.ClientCertFile != "" || q.ClientKeyFile != "" {
		opts = append(opts, nats.ClientCert(q.ClientCertFile, q.ClientKeyFile))
	}
	nc, err := nats.Connect(strings.Join(q.URLs, ","), opts...)
	if err != nil {
		return fmt.Errorf("natsnode: connect to %s: %w", strings.Join(q.URLs, ", "), err)
	}
	n.nc = nc
	return nil
}

// connOptions are the options both kinds of connection share.
func (n *Node) connOptions() []nats.Option {
	log := n.log.With("component", "nats")
	return []nats.Option{
		nats.Name(n.name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				n.connErr.Store(&err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "server", nc.ConnectedServerName(), "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			var subject string
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("NATS asynchronous error", "subject", subject, "error", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(n.closed) }),
	}
}

// waitUsable polls JetStream's account information until it answers. In a
// cluster only the meta leader answers it, so an answer means the meta
// group has a leader.
func (n *Node) waitUsable(ctx context.Context, begin time.Time) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := n.js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return n.notUsable(time.Since(begin).Round(100*time.Millisecond), last)
		case <-tick.C:
		}
	}
}

// notUsable is Start's error: what was missing after waiting d.
func (n *Node) notUsable(d time.Duration, last error) error {
	if n.ns == nil {
		if !n.nc.IsConnected() {
			if p := n.connErr.Load(); p != nil {
				last = *p
			}
			return fmt.Errorf("natsnode: not connected to %s after %s: %v",
				strings.Join(n.q.URLs, ", "), d, last)
		}
		return fmt.Errorf("natsnode: JetStream not usable at %s after %s: %v",
			n.nc.ConnectedUrlRedacted(), d, last)
	}
	if n.q.Cluster == nil {
		return fmt.Errorf("natsnode: JetStream of embedded node %s not usable after %s: %v", n.name, d, last)
	}
	reachable, expected := n.peersReachable()
	err := fmt.Errorf("natsnode: no JetStream meta leader after %s: %d of %d cluster peers reachable",
		d, reachable, expected)
	if !errors.Is(last, context.DeadlineExceeded) { // a leaderless cluster does not answer: nothing to add
		err = fmt.Errorf("%w (%v)", err, last)
	}
	return err
}

// peersReachable counts this node and the peers it has a route to, and the
// cluster's expected size: this node and the configured routes other than
// itself, or the meta group's size if that is larger.
func (n *Node) peersReachable() (reachable, expected int) {
	reachable = 1
	if rz, err := n.ns.Routez(nil); err == nil {
		seen := map[string]bool{}
		for _, r := range rz.Routes {
			if r.RemoteName != "" && !seen[r.RemoteName] {
				seen[r.RemoteName] = true
				reachable++
			}
		}
	}
	expected = 1
	for _, r := range n.q.Cluster.Routes {
		if u, err := routeURL(r); err == nil && u.Host != n.q.Cluster.Listen {
			expected++
		}
	}
	if jsz, err := n.ns.Jsz(nil); err == nil && jsz.Meta != nil {
		expected = max(expected, jsz.Meta.Size)
	}
	return reachable, max(expected, reachable)
}

// Name is this node's name (the queue block's node).
func (n *Node) Name() string { return n.name }

// Embedded reports whether the node runs nats-server in process.
func (n *Node) Embedded() bool { return n.ns != nil }

// Conn is the node's NATS connection. It reconnects forever; Close closes
// it.
func (n *Node) Conn() *nats.Conn { return n.nc }

// JetStream is the JetStream handle on Conn.
func (n *Node) JetStream() jetstream.JetStream { return n.js }

// ClientURL is the embedded node's client listener (nats://host:port), ""
// without one or for an external cluster.
func (n *Node) ClientURL() string {
	if n.ns == nil || n.q.Listen == "" {
		return ""
	}
	if a, ok := n.ns.Addr().(*net.TCPAddr); ok {
		return "nats://" + a.String()
	}
	return n.ns.ClientURL()
}

// Healthy reports whether the connection is up, without a round trip: it
// is cheap enough for every message. It does not see a lost quorum: a
// connected node of a cluster that lost its quorum is Healthy, and the loss
// shows as publishes that fail (no acknowledgement before the deadline, or
// "JetStream system temporarily unavailable"). Status tells an operator.
func (n *Node) Healthy() bool { return n.nc != nil && n.nc.IsConnected() }

// Close drains the connection (pending acknowledgements and subscriptions
// finish, bounded by nats.go's drain timeout of 30 s), then shuts the
// embedded server down and waits until it has stopped: its store is closed
// and its ports released. Close is idempotent; the error is the drain's.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.shutdown(true) })
	return n.closeErr
}

func (n *Node) shutdown(drain bool) error {
	var err error
	if n.nc != nil {
		if drain {
			err = n.nc.Drain()
		} else {
			n.nc.Close()
		}
		if err != nil {
			n.nc.Close()
		}
		<-n.closed // nats.go calls the ClosedHandler once the drain ends
	}
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	return err
}

// hostPort splits a listen address. Port 0 asks for an ephemeral port
// (nats-server's RANDOM_PORT: its own 0 means the default port).
func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// routeURL parses a route: nats://host:port, or host:port.
func routeURL(r string) (*url.URL, error) {
	if !strings.Contains(r, "://") {
		r = "nats://" + r
	}
	u, err := url.Parse(r)
	if err != nil || u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("natsnode: route %q: want nats://host:port", r)
	}
	return u, nil
}

func clusterListen(q policy.Queue) string {
	if q.Cluster == nil {
		return ""
	}
	return q.Cluster.Listen
}

// nkeyAuth authenticates a connection as kp.
func nkeyAuth(kp nkeys.KeyPair) nats.Option {
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, kp.Sign)
}

func remaining(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return DefaultConnectTimeout
}

// serverLogger routes nats-server's log into slog: notices at Info,
// warnings at Warn, errors and fatal errors at Error. Debug and trace
// lines are dropped (the server is never given the flags that make them).
// It keeps the first fatal message: nats-server's Fatalf does not stop an
// embedded server, it gives up on what failed (JetStream, a listener).
type serverLogger struct {
	log        *slog.Logger
	firstFatal atomic.Pointer[string]
}

func (l *serverLogger) fatal() string {
	if p := l.firstFatal.Load(); p != nil {
		return *p
	}
	return ""
}

func (l *serverLogger) logf(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, fmt.Sprintf(format, v...))
	}
}

func (l *serverLogger) Noticef(format string, v ...any) { l.logf(slog.LevelInfo, format, v) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.firstFatal.CompareAndSwap(nil, &msg)
	l.log.Error(msg)
}
func (l *serverLogger) Debugf(string, ...any) {}
func (l *serverLogger) Tracef(string, ...any) {}
