package policy

import "time"

// Queue is the queue block: which engine keeps the queue (docs/cluster.md).
//
//	queue {
//	  engine   = "jetstream"   # "local" (the default) or "jetstream"
//	  node     = "hub-a"       # this hub's name in the cluster (default: hub.hostname)
//	  replicas = 3             # copies of every message (1–5; default 3)
//	  sync     = "always"      # "always" fsyncs every write; required for replicas = 1
//
//	  # Either an existing NATS cluster ...
//	  urls             = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
//	  credentials_file = "/etc/hubd/nats.creds"
//	  ca_file          = "/etc/hubd/nats-ca.pem"
//	  client_cert_file = "/etc/hubd/nats.pem"
//	  client_key_file  = "/etc/hubd/nats.key"
//
//	  # ... or an embedded NATS node inside hubd (no urls), clustered with its peers:
//	  store_dir = "jetstream"   # default: <hub.spool_dir>/jetstream
//	  listen    = "127.0.0.1:4222" # optional: the embedded node's client port (for the nats CLI)
//	  cluster {
//	    name   = "hubs"
//	    listen = "10.0.0.1:6222"
//	    routes = ["nats://10.0.0.2:6222", "nats://10.0.0.3:6222"]
//	  }
//	}
//
// Load fills it from the block and checks it (queueblock.go). Without a
// queue block, or with engine = "local", only Engine is set ("local"):
// every other field is zero. With "jetstream" the defaults are filled in,
// relative paths are absolute, and URLs and Routes are normalised to
// scheme://host:port.
type Queue struct {
	// Engine is "local" (the log-structured spool under hub.spool_dir) or
	// "jetstream".
	Engine string
	// Node names this hub in the cluster: the owner of the messages it
	// accepts, the NATS server name of its embedded node, and the node
	// named in tracking events: letters, digits, '-' and '_' (a NATS
	// server name and subject token). Default: hub.hostname with its dots
	// made '-' ("mx.example.com" → "mx-example-com").
	Node string
	// Replicas is the stream replication factor (R1–R5). Default 3.
	Replicas int
	// SyncAlways: every write is fsynced before it is acknowledged
	// (embedded node: the server's sync_always). Required for Replicas 1,
	// where no other copy exists when the acknowledgement is given.
	SyncAlways bool

	// An existing cluster: URLs set (Embedded false).
	URLs            []string
	CredentialsFile string
	CAFile          string
	ClientCertFile  string
	ClientKeyFile   string

	// The embedded node: URLs empty.
	StoreDir string        // JetStream's store; relative paths resolve against the config file's directory
	Listen   string        // the embedded node's client listener, "" for none (in-process only)
	Cluster  *QueueCluster // nil: a single node
	// ConnectTimeout bounds start-up's wait for the cluster (quorum).
	ConnectTimeout time.Duration
}

// QueueCluster is the embedded node's cluster block.
type QueueCluster struct {
	Name   string
	Listen string   // host:port of the route listener
	Routes []string // nats://host:port of the peers' route listeners
}

// Embedded reports whether hubd runs the NATS node itself.
func (q Queue) Embedded() bool { return q.Engine == "jetstream" && len(q.URLs) == 0 }

// The queue engines.
const (
	QueueLocal     = "local"
	QueueJetStream = "jetstream"
)
