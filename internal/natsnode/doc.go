// Package natsnode gives hubd's JetStream queue engine its NATS connection:
// it runs the embedded NATS node of the queue block, or connects to an
// existing NATS cluster, and hands the queue store a connection and a
// JetStream handle that are ready for use. It knows nothing of messages.
//
// # Start
//
// Start returns a Node once JetStream answers its account information
// request ($JS.API.INFO). In a cluster only the JetStream meta leader
// answers that request, so a Node returned by Start means: the connection
// is up, and the meta group had a leader (a quorum of the cluster's peers
// agreed on one) at that moment. It does not mean that every stream has a
// leader: EnsureStream, EnsureKV and EnsureObjectStore retry the errors of
// a cluster that is still placing replicas. Start waits at most
// q.ConnectTimeout (DefaultConnectTimeout when zero) and no longer than
// its context; its error names what was missing, e.g.
//
//	natsnode: no JetStream meta leader after 30s: 1 of 3 cluster peers reachable
//	natsnode: not connected to nats://10.0.0.1:4222 after 30s: <dial error>
//
// Several nodes of one cluster may Start at the same time: each waits for
// the others.
//
// The embedded node is an in-process nats-server named q.Node, with
// JetStream stored under q.StoreDir. It installs no signal handlers, and
// its log goes to the slog logger with component=nats (notices at Info,
// warnings at Warn, errors at Error, debug and trace dropped). hubd's own
// connection to it is in-process (no socket). Its clients authenticate
// with nkeys made at each Start that never leave the process, except on
// the client listener q.Listen, if set, where a client without
// credentials is hubd's own user: that listener is for the nats CLI, is
// not authenticated, and belongs on loopback or behind a firewall. With a
// cluster block the node listens for routes on q.Cluster.Listen and
// connects to q.Cluster.Routes, retrying a route that is down every second
// for as long as it runs (logging the failure once a minute). A clustered
// node without q.Listen still opens a client listener, on a loopback port
// of the kernel's choosing that it does not advertise, because
// nats-server 2.15 never starts routing without one; only the in-process
// nkeys open it.
//
// An external cluster is reached at q.URLs, with the credentials file and
// the TLS files of the queue block. The connection is retried from the
// start (a cluster that comes up while Start waits is found) and
// reconnects forever; sync is then the servers' business (their
// jetstream sync_interval: always), which hubd can neither set nor check.
//
// # Acknowledgements and sync_always
//
// A JetStream publish acknowledgement means that the stream's leader has
// stored the message and, for a replicated stream (R>1), that a majority
// of the replicas have it in their Raft log. Without sync_always "stored"
// means handed to the kernel: nats-server fsyncs every two minutes, and a
// power loss of a majority can lose acknowledged messages. With
// q.SyncAlways the embedded node fsyncs every write before the write
// counts: an R1 stream's message file before the acknowledgement; for
// R>1, each replica's Raft log entry before that replica counts towards
// the majority (nats-server then syncs the stream's own files at its
// snapshots and recovers from the snapshot and the log). R1 without
// sync_always can lose an acknowledged message to a power cut; the queue
// block requires sync_always for replicas = 1.
//
// A publish that got no acknowledgement may still have been stored: a
// publisher that retries should set a message ID (jetstream.WithMsgID),
// which the stream deduplicates within its Duplicates window (two minutes
// by default).
//
// # Quorum
//
// Healthy is a local check without a round trip (the connection is up),
// cheap enough for every message. It does not see a lost quorum: a node
// connected to a cluster that lost its quorum is Healthy. The loss shows
// where it matters, as a publish that fails: no acknowledgement before
// its deadline (a stream leader that lost its followers keeps the title
// for about 10 s but cannot commit), or the API error "JetStream system
// temporarily unavailable" (10008). So a publisher sets a deadline on
// every publish and treats its expiry as "not stored".
//
// Status is for operators (hubctl cluster status, the admin API). Its
// Quorum is true when the meta group has a leader and a majority of its
// peers are up: a peer that shut down counts as down at once, one that
// crashed or is cut off once the leader has not heard from it for 10 s.
// So Status reports a quorum lost to shutdowns before the Raft leader
// steps down. Peers and their lag come from the
// meta leader's view (the embedded node asks it through its system
// account); only an external cluster's meta state is out of the client
// API's reach, so there Status says only whether the meta leader answered.
//
// # Close
//
// Close drains the connection (pending acknowledgements arrive,
// subscriptions finish), then shuts the embedded server down and waits
// for it: its store is closed and its ports are free when Close returns.
// An embedded server that leads a Raft group hands the leadership over as
// it shuts down.
package natsnode
