// Command hubctl operates a running hubd through its admin API
// (docs/admin-api.md): the queue viewer, connectors, routes, the tracking
// log, reload, status and the queue cluster. Tables by default, --json on every command.
//
//	hubctl [-socket PATH | -url URL -token-file F] [--json] COMMAND ...
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"hubd/internal/admin"
)

// env is what every command gets.
type env struct {
	client *admin.Client
	addr   string // the socket or URL client speaks to, for messages
	json   bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// commands maps the first word to its handler; each returns the exit code.
var commands = map[string]func(e *env, args []string) int{
	"queue":     cmdQueue,     // queue.go
	"message":   cmdMessage,   // message.go
	"track":     cmdTrack,     // track.go
	"connector": cmdConnector, // connector.go
	"status":    cmdStatus,    // status.go
	"cluster":   cmdCluster,   // cluster.go
	"reload":    cmdReload,    // reload.go
	"routes":    cmdRoutes,    // routes.go
	"config":    cmdConfig,    // config.go
}

const defaultSocket = "/run/hubd/admin.sock"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", envOr("HUBD_ADMIN_SOCKET", defaultSocket), "admin API Unix socket (env HUBD_ADMIN_SOCKET)")
	url := fs.String("url", os.Getenv("HUBD_ADMIN_URL"), "admin API over TCP, e.g. http://127.0.0.1:8025 (env HUBD_ADMIN_URL)")
	tokenFile := fs.String("token-file", os.Getenv("HUBD_ADMIN_TOKEN_FILE"), "file holding the bearer token for -url")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	if err := fs.Parse(args); err != nil {
		return 64
	}
	rest := fs.Args()
	if len(rest) == 0 {
		usage(stderr)
		return 64
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "hubctl: unknown command %q\n", rest[0])
		usage(stderr)
		return 64
	}
	addr, token := *socket, ""
	if *url != "" {
		addr = *url
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				fmt.Fprintf(stderr, "hubctl: %v\n", err)
				return 78
			}
			token = strings.TrimSpace(string(b))
		}
	}
	e := &env{client: admin.NewClient(addr, token), addr: addr, json: *asJSON, stdin: stdin, stdout: stdout, stderr: stderr}
	return cmd(e, rest[1:])
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: hubctl [-socket PATH | -url URL -token-file F] [-json] COMMAND ...
  queue list | retry Q [--resubmit] | suspend Q | resume Q
  message list [--queue Q] [--from A] [--to A] [--older-than D] [--state S] [--limit N] [--after POS] [-q]
  message show ID | export ID | hold|release|retry ID... | delete ID... [--ndr]     (ID "-": read ids from stdin)
  connector list | stop NAME | start NAME
  routes [--size N] [ADDRESS...]
  track [--message-id ID] [--queue-id ID] [--sender A] [--recipient A] [--since D] [--limit N]
  config check PATH
  reload
  status
  cluster status
`)
}
