package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// loadQueue loads baseConfig plus block in dir and returns the Queue.
func loadQueue(t *testing.T, dir, block string) Queue {
	t.Helper()
	cfg, diags := loadSrc(t, dir, baseConfig+block)
	if cfg == nil {
		t.Fatalf("load failed: %v", diags)
	}
	return cfg.Queue
}

// TestQueueDefault: without a queue block, and with engine = "local", the
// engine is local and nothing else is set.
func TestQueueDefault(t *testing.T) {
	dir := t.TempDir()
	for _, block := range []string{"", "queue {}\n", "queue {\n  engine = \"local\"\n}\n"} {
		q := loadQueue(t, dir, block)
		if q.Engine != QueueLocal || q.Embedded() || !reflect.DeepEqual(q, Queue{Engine: QueueLocal}) {
			t.Errorf("%q: queue %+v, want only Engine local", block, q)
		}
	}
}

// TestQueueEmbeddedCluster: a valid embedded node of a 3-node cluster,
// every attribute set.
func TestQueueEmbeddedCluster(t *testing.T) {
	dir := t.TempDir()
	cfg, diags := loadSrc(t, dir, baseConfig+`queue {
  engine          = "jetstream"
  node            = "hub-a"
  replicas        = 3
  sync            = "always"
  store_dir       = "js"
  listen          = "127.0.0.1:4222"
  connect_timeout = "1m"
  cluster {
    name   = "hubs_1"
    listen = "10.0.0.1:6222"
    routes = ["nats://10.0.0.2:6222", "10.0.0.3:6222"]
  }
}
`)
	if cfg == nil {
		t.Fatal(diags)
	}
	q := cfg.Queue
	want := Queue{Engine: QueueJetStream, Node: "hub-a", Replicas: 3, SyncAlways: true,
		StoreDir: filepath.Join(absDir(t, dir), "js"), Listen: "127.0.0.1:4222", ConnectTimeout: time.Minute,
		Cluster: &QueueCluster{Name: "hubs_1", Listen: "10.0.0.1:6222",
			Routes: []string{"nats://10.0.0.2:6222", "nats://10.0.0.3:6222"}}}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("queue\n%+v %+v\nwant\n%+v %+v", q, q.Cluster, want, want.Cluster)
	}
	if !q.Embedded() {
		t.Error("not Embedded")
	}
	var store []PathUse
	for _, u := range cfg.PathUses() {
		if u.Role == PathJetStream {
			store = append(store, u)
		}
	}
	if len(store) != 1 || store[0].Path != want.StoreDir || store[0].Setting != "queue.store_dir" ||
		store[0].Default || store[0].Range.Start.Line != strings.Count(baseConfig, "\n")+6 || !PathJetStream.CreatedDir() {
		t.Errorf("store_dir path uses %+v", store)
	}
}

// TestQueueEmbeddedSingle: one node, one fsynced copy; the store defaults
// to <spool_dir>/jetstream, at spool_dir's line for `hubd check`.
func TestQueueEmbeddedSingle(t *testing.T) {
	dir := t.TempDir()
	cfg, diags := loadSrc(t, dir, baseConfig+"queue {\n  engine   = \"jetstream\"\n  replicas = 1\n  sync     = \"always\"\n}\n")
	if cfg == nil {
		t.Fatal(diags)
	}
	q := cfg.Queue
	if q.StoreDir != filepath.Join(cfg.Hub.SpoolDir, "jetstream") || q.Replicas != 1 || !q.SyncAlways || q.Cluster != nil ||
		q.Listen != "" || q.ConnectTimeout != 30*time.Second || !q.Embedded() {
		t.Errorf("queue %+v", q)
	}
	found := false
	for _, u := range cfg.PathUses() {
		if u.Role == PathJetStream {
			found = true
			if !u.Default || u.Range.Start.Line != 3 || u.Range.Start.Column != 15 || u.Path != q.StoreDir {
				t.Errorf("default store_dir use %+v, want at spool_dir (3:15), Default", u)
			}
		}
	}
	if !found {
		t.Error("no path use for the store")
	}
}

// TestQueueExternal: an existing cluster with credentials and TLS files.
func TestQueueExternal(t *testing.T) {
	dir := sendAuthDir(t)
	cfg, diags := loadSrc(t, dir, baseConfig+`queue {
  engine           = "jetstream"
  sync             = "interval"
  urls             = ["nats://10.0.0.1:4222", "TLS://Nats.Example.COM:4443", "[2001:db8::1]:4222"]
  credentials_file = "relay.password"
  ca_file          = "cert.pem"
  client_cert_file = "cert.pem"
  client_key_file  = "key.pem"
  connect_timeout  = "10s"
}
`)
	if cfg == nil {
		t.Fatal(diags)
	}
	q := cfg.Queue
	want := Queue{Engine: QueueJetStream, Node: "mx-example-com", Replicas: 3,
		URLs:            []string{"nats://10.0.0.1:4222", "tls://nats.example.com:4443", "nats://[2001:db8::1]:4222"},
		CredentialsFile: filepath.Join(dir, "relay.password"), CAFile: filepath.Join(dir, "cert.pem"),
		ClientCertFile: filepath.Join(dir, "cert.pem"), ClientKeyFile: filepath.Join(dir, "key.pem"),
		ConnectTimeout: 10 * time.Second}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("queue\n%#v\nwant\n%#v", q, want)
	}
	if q.Embedded() {
		t.Error("Embedded with urls")
	}
	var settings []string
	for _, u := range cfg.PathUses() {
		if strings.HasPrefix(u.Setting, "queue.") {
			settings = append(settings, fmt.Sprintf("%s=%s", u.Setting, u.Role))
		}
	}
	wantSettings := []string{"queue.credentials_file=NATS credentials file", "queue.ca_file=TLS certificate",
		"queue.client_cert_file=TLS certificate", "queue.client_key_file=TLS private key"}
	if !slices.Equal(settings, wantSettings) {
		t.Errorf("path uses %q, want %q", settings, wantSettings)
	}
}

// TestQueueNodeFromHostname: node defaults to hub.hostname with its dots
// made '-'; a node written is taken as it is.
func TestQueueNodeFromHostname(t *testing.T) {
	dir := t.TempDir()
	src := strings.Replace(baseConfig, `"mx.example.com"`, `"Hub-7.MX.example.com"`, 1)
	cfg, diags := loadSrc(t, dir, src+"queue {\n  engine = \"jetstream\"\n  urls   = [\"127.0.0.1:4222\"]\n}\n")
	if cfg == nil {
		t.Fatal(diags)
	}
	if cfg.Queue.Node != "hub-7-mx-example-com" {
		t.Errorf("node %q, want hub-7-mx-example-com (from hostname %q)", cfg.Queue.Node, cfg.Hub.Hostname)
	}
	cfg, diags = loadSrc(t, dir, src+"queue {\n  engine = \"jetstream\"\n  node = \"Hub_A\"\n  urls = [\"127.0.0.1:4222\"]\n}\n")
	if cfg == nil {
		t.Fatal(diags)
	}
	if cfg.Queue.Node != "Hub_A" {
		t.Errorf("node %q, want Hub_A", cfg.Queue.Node)
	}
}

// TestQueueDiagnostics: every rule of the queue block, as a diagnostic at
// the attribute that breaks it.
func TestQueueDiagnostics(t *testing.T) {
	dir := sendAuthDir(t)
	base := strings.Count(baseConfig, "\n") // the block's first line is base+1
	const ext = "queue {\n  engine = \"jetstream\"\n  urls   = [\"nats://10.0.0.1:4222\"]\n"
	const single = "queue {\n  engine   = \"jetstream\"\n  replicas = 1\n  sync     = \"always\"\n"
	const cluster = "  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n    routes = [\"nats://10.0.0.2:6222\", \"nats://10.0.0.3:6222\"]\n  }\n"
	const three = "queue {\n  engine = \"jetstream\"\n" + cluster // lines 1-7; attributes follow on line 8
	cases := []struct {
		name, block string
		want        []string // "line:col summary", line 1 being the block's first
		detail      string   // in the first diagnostic's detail, if set
	}{
		{"two queue blocks", "queue {}\nqueue {}\n", []string{"2:1 Duplicate queue block"}, "the first is defined at test.hcl:10"},
		{"unknown engine", "queue {\n  engine = \"nats\"\n}\n", []string{"2:12 Invalid engine"}, `"local"`},
		{"local with jetstream settings", `queue {
  engine           = "local"
  node             = "a"
  replicas         = 1
  sync             = "always"
  urls             = ["nats://x:4222"]
  credentials_file = "relay.password"
  ca_file          = "cert.pem"
  client_cert_file = "cert.pem"
  client_key_file  = "key.pem"
  store_dir        = "js"
  listen           = "127.0.0.1:4222"
  connect_timeout  = "5s"
  cluster {
  }
}
`, []string{"3:22 Not for the local engine", "4:22 Not for the local engine", "5:22 Not for the local engine",
			"6:22 Not for the local engine", "7:22 Not for the local engine", "8:22 Not for the local engine",
			"9:22 Not for the local engine", "10:22 Not for the local engine", "11:22 Not for the local engine",
			"12:22 Not for the local engine", "13:22 Not for the local engine", "14:3 Not for the local engine"},
			`only for engine = "jetstream"`},
		{"local by default", "queue {\n  replicas = 1\n}\n", []string{"2:14 Not for the local engine"}, ""},

		{"node with a dot", ext + "  node = \"hub.a\"\n}\n", []string{"4:10 Invalid node"}, `e.g. "hub-a"`},
		{"node with a space", ext + "  node = \"hub a\"\n}\n", []string{"4:10 Invalid node"}, ""},
		{"node wildcard", ext + "  node = \"hub>\"\n}\n", []string{"4:10 Invalid node"}, ""},
		{"node empty", ext + "  node = \"\"\n}\n", []string{"4:10 Invalid node"}, ""},

		{"replicas 0", ext + "  replicas = 0\n}\n", []string{"4:14 Invalid replicas"}, "from 1 to 5"},
		{"replicas 6", ext + "  replicas = 6\n}\n", []string{"4:14 Invalid replicas"}, ""},
		{"replicas 1 without sync", ext + "  replicas = 1\n}\n", []string{"4:14 Single copy without sync"},
			`set sync = "always" or replicas = 3`},
		{"replicas 1 with sync interval", ext + "  replicas = 1\n  sync = \"interval\"\n}\n", []string{"4:14 Single copy without sync"}, ""},
		{"single node without sync", "queue {\n  engine   = \"jetstream\"\n  replicas = 1\n}\n",
			[]string{"3:14 Single copy without sync"}, `set sync = "always" (a single embedded node holds one copy`},
		{"unknown sync", ext + "  sync = \"never\"\n}\n", []string{"4:10 Invalid sync"}, `"always"`},

		{"url with another scheme", "queue {\n  engine = \"jetstream\"\n  urls = [\"http://10.0.0.1:4222\"]\n}\n",
			[]string{"3:11 Invalid NATS URL"}, `Write "nats://host:port"`},
		{"url without a port", "queue {\n  engine = \"jetstream\"\n  urls = [\"nats://10.0.0.1\"]\n}\n", []string{"3:11 Invalid NATS URL"}, ""},
		{"bare host without a port", "queue {\n  engine = \"jetstream\"\n  urls = [\"nats.example.com\"]\n}\n", []string{"3:11 Invalid NATS URL"}, ""},
		{"url port 0", "queue {\n  engine = \"jetstream\"\n  urls = [\"nats://a:0\"]\n}\n", []string{"3:11 Invalid NATS URL"}, "1 to 65535"},
		{"url with credentials", "queue {\n  engine = \"jetstream\"\n  urls = [\"nats://u:p@a:4222\"]\n}\n",
			[]string{"3:11 Invalid NATS URL"}, "credentials_file"},
		{"url with a path", "queue {\n  engine = \"jetstream\"\n  urls = [\"nats://a:4222/x\"]\n}\n", []string{"3:11 Invalid NATS URL"}, ""},
		{"url without a host", "queue {\n  engine = \"jetstream\"\n  urls = [\":4222\"]\n}\n", []string{"3:11 Invalid NATS URL"}, "names no host"},
		{"url twice", "queue {\n  engine = \"jetstream\"\n  urls = [\"nats://A:4222\", \"a:4222\"]\n}\n",
			[]string{"3:28 Duplicate NATS URL"}, "listed twice"},
		{"urls empty", "queue {\n  engine = \"jetstream\"\n  urls = []\n}\n", []string{"3:10 Empty urls"}, ""},
		{"urls not a list", "queue {\n  engine = \"jetstream\"\n  urls = \"nats://a:4222\"\n}\n", []string{"3:10 Expected a list of strings"}, ""},

		{"embedded settings with urls", ext + "  store_dir = \"js\"\n  listen = \"127.0.0.1:4222\"\n" + cluster + "}\n",
			[]string{"4:15 Not for an existing cluster", "5:12 Not for an existing cluster", "6:3 Not for an existing cluster"},
			"only for the embedded node (no urls)"},
		{"client files without urls", single + `  credentials_file = "relay.password"
  ca_file          = "cert.pem"
  client_cert_file = "cert.pem"
  client_key_file  = "key.pem"
}
`, []string{"5:22 Not for the embedded node", "6:22 Not for the embedded node", "7:22 Not for the embedded node",
			"8:22 Not for the embedded node"}, "only for an existing cluster (urls)"},
		{"credentials file missing", ext + "  credentials_file = \"nope.creds\"\n}\n", []string{"4:22 Missing credentials_file"}, "does not exist"},
		{"credentials file empty", ext + "  credentials_file = \"empty.password\"\n}\n", []string{"4:22 Empty credentials_file"}, ""},
		{"ca file not PEM", ext + "  ca_file = \"relay.password\"\n}\n", []string{"4:13 Unusable ca_file"}, "no PEM certificate"},
		{"ca file missing", ext + "  ca_file = \"nope.pem\"\n}\n", []string{"4:13 Missing ca_file"}, ""},
		{"cert without key", ext + "  client_cert_file = \"cert.pem\"\n}\n", []string{"4:22 Missing client_key_file"}, ""},
		{"key without cert", ext + "  client_key_file = \"key.pem\"\n}\n", []string{"4:21 Missing client_cert_file"}, ""},
		{"cert missing", ext + "  client_cert_file = \"nope.pem\"\n  client_key_file  = \"key.pem\"\n}\n",
			[]string{"4:22 Missing client_cert_file"}, ""},
		{"mismatched pair", ext + "  client_cert_file = \"cert.pem\"\n  client_key_file  = \"other.key\"\n}\n",
			[]string{"5:22 Unusable client certificate"}, ""},

		{"store_dir empty", single + "  store_dir = \"\"\n}\n", []string{"5:15 Invalid store_dir"}, ""},
		{"listen without a port", single + "  listen = \"127.0.0.1\"\n}\n", []string{"5:12 Invalid listen"}, `"host:port"`},
		{"listen port 0", single + "  listen = \"127.0.0.1:0\"\n}\n", []string{"5:12 Invalid listen"}, "1 to 65535"},
		{"listen port too high", single + "  listen = \"127.0.0.1:65536\"\n}\n", []string{"5:12 Invalid listen"}, ""},

		{"cluster without name", "queue {\n  engine = \"jetstream\"\n  cluster {\n    listen = \"10.0.0.1:6222\"\n    routes = [\"10.0.0.2:6222\", \"10.0.0.3:6222\"]\n  }\n}\n",
			[]string{"3:3 Missing cluster name"}, `name = "hubs"`},
		{"cluster name with a dot", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs.eu\"\n    listen = \"10.0.0.1:6222\"\n    routes = [\"10.0.0.2:6222\", \"10.0.0.3:6222\"]\n  }\n}\n",
			[]string{"4:14 Invalid cluster name"}, ""},
		{"cluster without listen", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    routes = [\"10.0.0.2:6222\", \"10.0.0.3:6222\"]\n  }\n}\n",
			[]string{"3:3 Missing cluster listen"}, `listen = "10.0.0.1:6222"`},
		{"cluster listen without a port", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1\"\n    routes = [\"10.0.0.2:6222\", \"10.0.0.3:6222\"]\n  }\n}\n",
			[]string{"5:14 Invalid cluster listen"}, ""},
		{"cluster without routes", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n  }\n}\n",
			[]string{"3:3 Missing routes"}, `routes = ["nats://10.0.0.2:6222"`},
		{"cluster routes empty", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n    routes = []\n  }\n}\n",
			[]string{"6:14 Empty routes"}, ""},
		{"route over tls", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n    routes = [\"tls://10.0.0.2:6222\", \"10.0.0.3:6222\"]\n  }\n}\n",
			[]string{"6:15 Invalid route"}, "nats://"},
		{"route twice", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n    routes = [\"10.0.0.2:6222\", \"nats://10.0.0.2:6222\"]\n  }\n}\n",
			[]string{"6:32 Duplicate route"}, ""},
		{"route to itself", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n    routes = [\"nats://10.0.0.1:6222\", \"10.0.0.3:6222\"]\n  }\n}\n",
			[]string{"6:15 Route to this node"}, "own cluster listen"},
		{"two cluster blocks", three + cluster + "}\n", []string{"8:3 Duplicate cluster block"}, ""},

		{"replicas over the cluster", "queue {\n  engine   = \"jetstream\"\n  replicas = 3\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n    routes = [\"10.0.0.2:6222\"]\n  }\n}\n",
			[]string{"3:14 Too many replicas for the cluster"}, "replicas = 3 needs at least 3 nodes: this cluster block names 2"},
		{"default replicas over the cluster", "queue {\n  engine = \"jetstream\"\n  cluster {\n    name   = \"hubs\"\n    listen = \"10.0.0.1:6222\"\n    routes = [\"10.0.0.2:6222\"]\n  }\n}\n",
			[]string{"1:1 Too many replicas for the cluster"}, "replicas is not set, so it is 3, which needs at least 3 nodes: this cluster block names 2"},
		{"replicas 3 on one node", "queue {\n  engine   = \"jetstream\"\n  replicas = 3\n}\n",
			[]string{"3:14 Too many replicas for one node"}, `A single embedded node holds one copy (replicas = 3 needs 3 nodes): set replicas = 1 with sync = "always", or add a cluster block`},
		{"default replicas on one node", "queue {\n  engine = \"jetstream\"\n}\n",
			[]string{"1:1 Too many replicas for one node"}, "replicas is not set, so it is 3"},

		{"connect_timeout zero", ext + "  connect_timeout = \"0s\"\n}\n", []string{"4:21 Invalid duration"}, "connect_timeout must be longer than zero"},
		{"connect_timeout garbled", ext + "  connect_timeout = \"soon\"\n}\n", []string{"4:21 Invalid duration"}, ""},
		{"connect_timeout without a unit", ext + "  connect_timeout = \"30\"\n}\n", []string{"4:21 Invalid duration"}, "no unit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, diags := loadSrc(t, dir, baseConfig+c.block)
			var got []string
			for _, d := range diags {
				if d.Subject == nil {
					t.Errorf("diagnostic without a position: %s", d.Summary)
					continue
				}
				got = append(got, fmt.Sprintf("%d:%d %s", d.Subject.Start.Line-base, d.Subject.Start.Column, d.Summary))
				if strings.Contains(d.Detail, "s3cret") {
					t.Errorf("credentials in a diagnostic: %s", d.Detail)
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("diagnostics %q, want %q", got, c.want)
			}
			if c.detail != "" && len(diags) > 0 && !strings.Contains(diags[0].Detail, c.detail) {
				t.Errorf("detail %q does not say %q", diags[0].Detail, c.detail)
			}
		})
	}
}

// TestQueueFilesInHash: the queue's credentials and TLS files are part of
// the configuration hash; the block itself is, as every HCL file is.
func TestQueueFilesInHash(t *testing.T) {
	dir := sendAuthDir(t)
	src := baseConfig + "queue {\n  engine = \"jetstream\"\n  urls = [\"a:4222\"]\n  credentials_file = \"bare.password\"\n}\n"
	cfg1, diags := loadSrc(t, dir, src)
	if cfg1 == nil {
		t.Fatal(diags)
	}
	if err := os.WriteFile(filepath.Join(dir, "bare.password"), []byte("other creds"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2, diags := loadSrc(t, dir, src)
	if cfg2 == nil {
		t.Fatal(diags)
	}
	if cfg1.Hash() == cfg2.Hash() {
		t.Error("hash unchanged after the credentials file changed")
	}
	cfg3, diags := loadSrc(t, dir, strings.Replace(src, "a:4222", "b:4222", 1))
	if cfg3 == nil {
		t.Fatal(diags)
	}
	if cfg3.Hash() == cfg2.Hash() {
		t.Error("hash unchanged after the queue block changed")
	}
}
