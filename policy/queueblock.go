package policy

// The queue block (Queue, queue.go): which engine keeps the queue, and for
// the JetStream engine where its NATS servers are. The rules, each a
// diagnostic at the attribute (file:line:col) when broken:
//
//   - At most one queue block. Without one, or without engine, the engine
//     is "local" (the spool under hub.spool_dir); engine is "local" or
//     "jetstream". With "local" every other attribute, and the cluster
//     block, is an error: they would silently do nothing.
//   - node defaults to hub.hostname with its dots made '-'
//     ("mx.example.com" → "mx-example-com"): it is a NATS server name and
//     a subject token, so only letters, digits, '-' and '_'.
//   - replicas is 1–5 (default 3); replicas = 1 needs sync = "always", as
//     no other copy exists when a write is acknowledged. sync is "always"
//     or "interval" (the default: JetStream's own periodic fsync).
//   - urls names an existing NATS cluster (nats://, tls:// or a bare
//     host:port, made nats://host:port), no server twice. Only then are
//     credentials_file, ca_file, client_cert_file and client_key_file
//     allowed (the certificate and key together); they are read at load,
//     like a send connector's, and their bytes are part of Config.Hash.
//   - Without urls hubd runs the NATS node itself: store_dir (default
//     <hub.spool_dir>/jetstream), listen (optional client port) and the
//     cluster block (name, listen, routes) are only for it. A single
//     embedded node holds one copy (replicas = 1); a cluster of N nodes
//     holds at most N (replicas ≤ 1 + len(routes)).
//   - connect_timeout (default 30s) bounds start-up's wait for the cluster.
//
// The whole block is read at start: a reload that changes it is reported
// as needing a restart (internal/daemon).

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

type queueSchema struct {
	Engine               *string              `hcl:"engine,optional"`
	EngineRange          hcl.Range            `hcl:"engine,attr_value_range"`
	Node                 *string              `hcl:"node,optional"`
	NodeRange            hcl.Range            `hcl:"node,attr_value_range"`
	Replicas             *int                 `hcl:"replicas,optional"`
	ReplicasRange        hcl.Range            `hcl:"replicas,attr_value_range"`
	Sync                 *string              `hcl:"sync,optional"`
	SyncRange            hcl.Range            `hcl:"sync,attr_value_range"`
	URLs                 hcl.Expression       `hcl:"urls,optional"`
	CredentialsFile      *string              `hcl:"credentials_file,optional"`
	CredentialsFileRange hcl.Range            `hcl:"credentials_file,attr_value_range"`
	CAFile               *string              `hcl:"ca_file,optional"`
	CAFileRange          hcl.Range            `hcl:"ca_file,attr_value_range"`
	ClientCertFile       *string              `hcl:"client_cert_file,optional"`
	ClientCertRange      hcl.Range            `hcl:"client_cert_file,attr_value_range"`
	ClientKeyFile        *string              `hcl:"client_key_file,optional"`
	ClientKeyRange       hcl.Range            `hcl:"client_key_file,attr_value_range"`
	StoreDir             *string              `hcl:"store_dir,optional"`
	StoreDirRange        hcl.Range            `hcl:"store_dir,attr_value_range"`
	Listen               *string              `hcl:"listen,optional"`
	ListenRange          hcl.Range            `hcl:"listen,attr_value_range"`
	ConnectTimeout       *string              `hcl:"connect_timeout,optional"`
	ConnectTimeoutRange  hcl.Range            `hcl:"connect_timeout,attr_value_range"`
	Clusters             []queueClusterSchema `hcl:"cluster,block"` // at most one: cluster()
	DefRange             hcl.Range            `hcl:",def_range"`
}

// cluster is the cluster block, nil for none.
func (s *queueSchema) cluster() *queueClusterSchema {
	if len(s.Clusters) == 0 {
		return nil
	}
	return &s.Clusters[0]
}

type queueClusterSchema struct {
	Name        *string        `hcl:"name,optional"`
	NameRange   hcl.Range      `hcl:"name,attr_value_range"`
	Listen      *string        `hcl:"listen,optional"`
	ListenRange hcl.Range      `hcl:"listen,attr_value_range"`
	Routes      hcl.Expression `hcl:"routes,optional"`
	DefRange    hcl.Range      `hcl:",def_range"`
}

// Queue defaults.
const (
	defaultQueueReplicas       = 3
	maxQueueReplicas           = 5 // JetStream's limit on a stream's replicas
	defaultQueueConnectTimeout = 30 * time.Second
)

// queueAttr is one attribute of the queue block, for the checks that say
// where it does not belong.
type queueAttr struct {
	name string
	set  bool
	rng  hcl.Range
}

func (l *loader) buildQueue() {
	q := &l.cfg.Queue
	*q = Queue{Engine: QueueLocal}
	blocks := l.schema.Queues
	if len(blocks) == 0 {
		return
	}
	for _, extra := range blocks[1:] {
		l.errorf(extra.DefRange, "Duplicate queue block",
			"Only one queue block is allowed; the first is defined at %s.", rangeLine(blocks[0].DefRange))
	}
	s := &blocks[0]
	for _, extra := range s.Clusters[min(1, len(s.Clusters)):] {
		l.errorf(extra.DefRange, "Duplicate cluster block",
			"Only one cluster block is allowed in the queue block; the first is defined at %s.", rangeLine(s.Clusters[0].DefRange))
	}
	if s.Engine != nil {
		switch *s.Engine {
		case QueueLocal, QueueJetStream:
			q.Engine = *s.Engine
		default:
			l.errorf(s.EngineRange, "Invalid engine",
				"engine is %q (the spool under hub.spool_dir, the default) or %q (a NATS JetStream cluster, docs/cluster.md), not %q.",
				QueueLocal, QueueJetStream, *s.Engine)
			return // which rules apply is unknown
		}
	}
	if q.Engine == QueueLocal {
		for _, a := range s.jetStreamAttrs() {
			if a.set {
				l.errorf(a.rng, "Not for the local engine",
					"%s is only for engine = \"jetstream\"; the local engine keeps the queue under hub.spool_dir. "+
						"Set engine = \"jetstream\", or remove %s.", a.name, a.name)
			}
		}
		return
	}
	l.queueNode(s, q)
	replicasOK := true
	q.Replicas = defaultQueueReplicas
	if s.Replicas != nil {
		if *s.Replicas < 1 || *s.Replicas > maxQueueReplicas {
			l.errorf(s.ReplicasRange, "Invalid replicas",
				"replicas is the number of copies of every message, from 1 to %d, not %d; 3 keeps the queue through the loss of one node.",
				maxQueueReplicas, *s.Replicas)
			replicasOK = false
		} else {
			q.Replicas = *s.Replicas
		}
	}
	if s.Sync != nil {
		switch *s.Sync {
		case "always":
			q.SyncAlways = true
		case "interval":
		default:
			l.errorf(s.SyncRange, "Invalid sync",
				"sync is \"always\" (fsync every write before it is acknowledged) or \"interval\" (JetStream's periodic fsync, the default), not %q.", *s.Sync)
		}
	}
	if replicasOK && q.Replicas == 1 && !q.SyncAlways && (s.Sync == nil || *s.Sync == "interval") {
		fix := "set sync = \"always\" or replicas = 3"
		if !exprSet(s.URLs) && s.cluster() == nil {
			fix = "set sync = \"always\" (a single embedded node holds one copy; replicas = 3 needs a cluster block)"
		}
		l.errorf(s.ReplicasRange, "Single copy without sync",
			"A single copy is durable only if every write is fsynced: %s.", fix)
	}
	q.ConnectTimeout = l.positiveDuration(s.ConnectTimeout, s.ConnectTimeoutRange, defaultQueueConnectTimeout, "connect_timeout")
	if l.queueURLs(s, q) {
		l.queueExternal(s, q)
	} else {
		l.queueEmbedded(s, q, replicasOK)
	}
}

// jetStreamAttrs are every attribute but engine, and the cluster block.
func (s *queueSchema) jetStreamAttrs() []queueAttr {
	attrs := []queueAttr{
		{"node", s.Node != nil, s.NodeRange},
		{"replicas", s.Replicas != nil, s.ReplicasRange},
		{"sync", s.Sync != nil, s.SyncRange},
		{"urls", exprSet(s.URLs), exprRange(s.URLs)},
	}
	attrs = append(attrs, s.externalAttrs()...)
	attrs = append(attrs, s.embeddedAttrs()...)
	return append(attrs, queueAttr{"connect_timeout", s.ConnectTimeout != nil, s.ConnectTimeoutRange})
}

// externalAttrs are the attributes only for an existing cluster (urls).
func (s *queueSchema) externalAttrs() []queueAttr {
	return []queueAttr{
		{"credentials_file", s.CredentialsFile != nil, s.CredentialsFileRange},
		{"ca_file", s.CAFile != nil, s.CAFileRange},
		{"client_cert_file", s.ClientCertFile != nil, s.ClientCertRange},
		{"client_key_file", s.ClientKeyFile != nil, s.ClientKeyRange},
	}
}

// embeddedAttrs are the attributes only for the embedded node (no urls).
func (s *queueSchema) embeddedAttrs() []queueAttr {
	a := []queueAttr{
		{"store_dir", s.StoreDir != nil, s.StoreDirRange},
		{"listen", s.Listen != nil, s.ListenRange},
	}
	if c := s.cluster(); c != nil {
		a = append(a, queueAttr{"the cluster block", true, c.DefRange})
	}
	return a
}

// exprSet reports whether an optional expression attribute was written
// (gohcl gives an absent one as a null expression).
func exprSet(e hcl.Expression) bool {
	if e == nil {
		return false
	}
	v, diags := e.Value(nil)
	return diags.HasErrors() || !v.IsNull()
}

// emptyList reports whether an expression attribute is a list written
// empty ("[]").
func emptyList(e hcl.Expression) bool {
	if e == nil {
		return false
	}
	v, diags := e.Value(nil)
	return !diags.HasErrors() && !v.IsNull() && v.IsKnown() && v.CanIterateElements() && v.LengthInt() == 0
}

func exprRange(e hcl.Expression) hcl.Range {
	if e == nil {
		return hcl.Range{}
	}
	return e.Range()
}

// queueNode fills Node: the node attribute, else hub.hostname with its
// dots made '-' (a NATS server name and subject token has none).
func (l *loader) queueNode(s *queueSchema, q *Queue) {
	if s.Node != nil {
		if !validNodeName(*s.Node) {
			l.errorf(s.NodeRange, "Invalid node",
				"node is this hub's NATS server name and a subject token: letters, digits, '-' and '_' only (no dots, spaces, '*' or '>'), e.g. \"hub-a\"; %q is not.",
				*s.Node)
		}
		q.Node = *s.Node
		return
	}
	h := l.cfg.Hub.Hostname
	if h == "" {
		return // the hub block's error
	}
	q.Node = strings.ReplaceAll(h, ".", "-")
	if !validNodeName(q.Node) {
		l.errorf(s.DefRange, "Missing node",
			"node defaults to hub.hostname with its dots made '-' (%q), which is not a NATS server name (letters, digits, '-' and '_'); set node, e.g. node = \"hub-a\".",
			q.Node)
	}
}

// validNodeName: [A-Za-z0-9_-]+, a NATS server name that is also a subject
// token. Cluster names follow the same rule.
func validNodeName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// queueURLs fills URLs and reports whether urls was written (an existing
// cluster), valid or not.
func (l *loader) queueURLs(s *queueSchema, q *Queue) bool {
	items, set := l.stringList(s.URLs)
	if !set {
		return false
	}
	if emptyList(s.URLs) {
		l.errorf(s.URLs.Range(), "Empty urls",
			"List the NATS servers of the existing cluster, e.g. urls = [\"nats://10.0.0.1:4222\"], or leave urls out to run the node inside hubd.")
	}
	seen := map[string]string{}
	for _, it := range items {
		u, hostPort, err := natsURL(it.val, "nats", "tls")
		if err != nil {
			l.errorf(it.rng, "Invalid NATS URL",
				"%v. Write \"nats://host:port\", \"tls://host:port\" (TLS required) or a bare \"host:port\", e.g. \"nats://10.0.0.1:4222\".", err)
			continue
		}
		if first, ok := seen[hostPort]; ok {
			l.errorf(it.rng, "Duplicate NATS URL", "%s is listed twice in urls (first as %s).", hostPort, first)
			continue
		}
		seen[hostPort] = u
		q.URLs = append(q.URLs, u)
	}
	return true
}

// natsURL checks a NATS URL with one of schemes, or a bare host:port (made
// nats://), and returns it normalised (scheme and host lower-case) with
// its host:port.
func natsURL(s string, schemes ...string) (norm, hostPort string, err error) {
	scheme := "nats"
	hostPort = s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", "", fmt.Errorf("%q is not a URL", s)
		}
		scheme = strings.ToLower(u.Scheme)
		switch {
		case !slices.Contains(schemes, scheme):
			return "", "", fmt.Errorf("%q: the scheme must be %s://", s, strings.Join(schemes, ":// or "))
		case u.User != nil:
			return "", "", fmt.Errorf("%q carries credentials; they go in credentials_file, never in a URL", s)
		case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
			return "", "", fmt.Errorf("%q has more than a host and port", s)
		}
		hostPort = u.Host
	}
	if err := checkListen(hostPort); err != nil {
		return "", "", fmt.Errorf("%q: %v", s, err)
	}
	host, port, _ := net.SplitHostPort(hostPort)
	if host == "" {
		return "", "", fmt.Errorf("%q names no host", s)
	}
	hostPort = net.JoinHostPort(strings.ToLower(host), port)
	return scheme + "://" + hostPort, hostPort, nil
}

// queueExternal checks the settings of an existing cluster: the embedded
// node's are errors; the client's files are read.
func (l *loader) queueExternal(s *queueSchema, q *Queue) {
	for _, a := range s.embeddedAttrs() {
		if a.set {
			l.errorf(a.rng, "Not for an existing cluster",
				"%s is only for the embedded node (no urls): with urls, the NATS servers of that cluster keep the store. "+
					"Remove %s, or remove urls to run the node inside hubd.", a.name, a.name)
		}
	}
	if s.CredentialsFile != nil {
		q.CredentialsFile = l.queueSecretFile(*s.CredentialsFile, s.CredentialsFileRange, "credentials_file")
		if q.CredentialsFile != "" {
			l.usePath(PathUse{Role: PathNATSCredentials, Path: q.CredentialsFile, Setting: "queue.credentials_file", Range: s.CredentialsFileRange})
		}
	}
	if s.CAFile != nil {
		q.CAFile = l.queueCAFile(*s.CAFile, s.CAFileRange)
	}
	l.queueClientCert(s, q)
}

// queueSecretFile reads a file of secrets into Config.Hash (never into a
// diagnostic); "" when it is missing, unreadable or empty (reported).
func (l *loader) queueSecretFile(p string, rng hcl.Range, what string) string {
	before := len(l.diags)
	full := l.existingFile(p, rng, what)
	if len(l.diags) > before {
		return ""
	}
	src, err := os.ReadFile(full)
	if err != nil {
		l.errorf(rng, "Unreadable "+what, "%s: %v.", full, err)
		return ""
	}
	if strings.TrimSpace(string(src)) == "" {
		l.errorf(rng, "Empty "+what, "%s is empty.", full)
		return ""
	}
	l.hashOnly(full, src)
	return full
}

// queueCAFile checks ca_file: PEM certificates that parse.
func (l *loader) queueCAFile(p string, rng hcl.Range) string {
	before := len(l.diags)
	full := l.existingFile(p, rng, "ca_file")
	if len(l.diags) > before {
		return ""
	}
	pem, err := os.ReadFile(full)
	if err == nil && !x509.NewCertPool().AppendCertsFromPEM(pem) {
		err = errors.New("no PEM certificate in it")
	}
	if err != nil {
		l.errorf(rng, "Unusable ca_file", "%s: %v.", full, err)
		return ""
	}
	l.hashOnly(full, pem)
	l.usePath(PathUse{Role: PathTLSCert, Path: full, Setting: "queue.ca_file", Range: rng})
	return full
}

// queueClientCert checks client_cert_file and client_key_file: both or
// neither, and a pair that loads; both are part of the hash.
func (l *loader) queueClientCert(s *queueSchema, q *Queue) {
	cert, key, certPEM, keyPEM, ok := l.certKeyPair(s.ClientCertFile, s.ClientCertRange, s.ClientKeyFile, s.ClientKeyRange)
	if !ok {
		return
	}
	l.hashOnly(cert, certPEM)
	l.hashOnly(key, keyPEM)
	q.ClientCertFile, q.ClientKeyFile = cert, key
	l.usePath(PathUse{Role: PathTLSCert, Path: cert, Setting: "queue.client_cert_file", Range: s.ClientCertRange})
	l.usePath(PathUse{Role: PathTLSKey, Path: key, Setting: "queue.client_key_file", Range: s.ClientKeyRange, Pair: cert})
}

// queueEmbedded checks the settings of the node hubd runs itself: the
// client's files are errors; the store, listener and cluster are set.
func (l *loader) queueEmbedded(s *queueSchema, q *Queue, replicasOK bool) {
	for _, a := range s.externalAttrs() {
		if a.set {
			l.errorf(a.rng, "Not for the embedded node",
				"%s is only for an existing cluster (urls): the embedded node runs inside hubd, which reaches it in-process. "+
					"Remove %s, or set urls.", a.name, a.name)
		}
	}
	l.queueStoreDir(s, q)
	if s.Listen != nil {
		if err := checkListen(*s.Listen); err != nil {
			l.errorf(s.ListenRange, "Invalid listen",
				"listen is the embedded node's client port, \"host:port\", e.g. \"127.0.0.1:4222\": %v.", err)
		} else {
			q.Listen = *s.Listen
		}
	}
	nodes := 1
	if c := s.cluster(); c != nil {
		before := len(l.diags)
		q.Cluster = l.queueCluster(c)
		if len(l.diags) > before {
			return // the node count is unknown
		}
		nodes += len(q.Cluster.Routes)
	}
	if !replicasOK || q.Replicas <= nodes {
		return
	}
	rng, replicas := s.ReplicasRange, fmt.Sprintf("replicas = %d", q.Replicas)
	if s.Replicas == nil {
		// The default, 3, fails here: say so at the block.
		rng, replicas = s.DefRange, fmt.Sprintf("replicas is not set, so it is %d, which", defaultQueueReplicas)
	}
	if q.Cluster == nil {
		l.errorf(rng, "Too many replicas for one node",
			"A single embedded node holds one copy (%s needs %d nodes): set replicas = 1 with sync = \"always\", or add a cluster block.",
			replicas, q.Replicas)
		return
	}
	l.errorf(rng, "Too many replicas for the cluster",
		"%s needs at least %d nodes: this cluster block names %d (this node and its routes). Add routes, or set replicas = %d or fewer.",
		replicas, q.Replicas, nodes, nodes)
}

// queueStoreDir fills StoreDir: store_dir, or jetstream under the spool.
func (l *loader) queueStoreDir(s *queueSchema, q *Queue) {
	switch {
	case s.StoreDir != nil && strings.TrimSpace(*s.StoreDir) == "":
		l.errorf(s.StoreDirRange, "Invalid store_dir", "store_dir must not be empty; leave it out for <hub.spool_dir>/jetstream.")
		return
	case s.StoreDir != nil:
		q.StoreDir = l.path(*s.StoreDir, s.StoreDirRange)
		l.usePath(PathUse{Role: PathJetStream, Path: q.StoreDir, Setting: "queue.store_dir", Range: s.StoreDirRange})
	case l.cfg.Hub.SpoolDir != "":
		q.StoreDir = filepath.Join(l.cfg.Hub.SpoolDir, "jetstream")
		l.usePath(PathUse{Role: PathJetStream, Path: q.StoreDir, Setting: "queue.store_dir",
			Range: l.schema.Hubs[0].SpoolDirRange, Default: true})
	}
}

// queueCluster checks the embedded node's cluster block.
func (l *loader) queueCluster(c *queueClusterSchema) *QueueCluster {
	qc := &QueueCluster{}
	switch {
	case c.Name == nil:
		l.errorf(c.DefRange, "Missing cluster name",
			"The cluster block needs name, the same on every node, e.g. name = \"hubs\".")
	case !validNodeName(*c.Name):
		l.errorf(c.NameRange, "Invalid cluster name",
			"The cluster name is letters, digits, '-' and '_' only (no dots, spaces, '*' or '>'), e.g. \"hubs\"; %q is not.", *c.Name)
	default:
		qc.Name = *c.Name
	}
	own := ""
	switch {
	case c.Listen == nil:
		l.errorf(c.DefRange, "Missing cluster listen",
			"The cluster block needs listen, this node's route port \"host:port\", e.g. listen = \"10.0.0.1:6222\".")
	default:
		if err := checkListen(*c.Listen); err != nil {
			l.errorf(c.ListenRange, "Invalid cluster listen",
				"listen is this node's route port, \"host:port\", e.g. \"10.0.0.1:6222\": %v.", err)
			break
		}
		qc.Listen = *c.Listen
		host, port, _ := net.SplitHostPort(*c.Listen)
		own = net.JoinHostPort(strings.ToLower(host), port)
	}
	items, set := l.stringList(c.Routes)
	switch {
	case !set:
		l.errorf(c.DefRange, "Missing routes",
			"The cluster block needs routes, the route ports of the other nodes, e.g. routes = [\"nats://10.0.0.2:6222\", \"nats://10.0.0.3:6222\"].")
	case emptyList(c.Routes):
		l.errorf(c.Routes.Range(), "Empty routes",
			"List the route ports of the other nodes, e.g. routes = [\"nats://10.0.0.2:6222\"]; a single node needs no cluster block.")
	}
	seen := map[string]bool{}
	for _, it := range items {
		u, hostPort, err := natsURL(it.val, "nats")
		switch {
		case err != nil:
			l.errorf(it.rng, "Invalid route",
				"%v. Write \"nats://host:port\" (or a bare \"host:port\"), the route port of another node, e.g. \"nats://10.0.0.2:6222\".", err)
		case seen[hostPort]:
			l.errorf(it.rng, "Duplicate route", "%s is listed twice in routes.", hostPort)
		case hostPort == own:
			l.errorf(it.rng, "Route to this node",
				"%s is this node's own cluster listen; routes name the other nodes only.", hostPort)
		default:
			seen[hostPort] = true
			qc.Routes = append(qc.Routes, u)
		}
	}
	return qc
}
