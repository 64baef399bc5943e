// Command hubd is the hubd mail transfer agent: receive connectors feeding one
// durable queue, a categorizer and deliverers, configured by one HCL file or
// a directory of them.
//
//	hubd run   -config PATH   start the daemon (SIGHUP reloads, SIGTERM/SIGINT stop cleanly)
//	hubd check -config PATH   validate the configuration and the paths it names; exit 1 on errors; start nothing
//	hubd routes -config PATH [address...]   print the routing table, and where each address goes and why
//	hubd hash-password [-argon2id]   print the bcrypt (or Argon2id) hash of a password read on stdin
//	hubd dkim keygen -domain D -selector S   write a DKIM key; print its DNS record and HCL block
//	hubd sendmail [options] [recipient...]   sendmail(1): the message on stdin into the maildrop
//	hubd mailq [--json]       list the queue in Postfix's mailq layout
//	hubd newaliases           check the aliases files and ask hubd to reload
//	hubd version              print the version
//
// Invoked under the name sendmail, mailq or newaliases (a link), hubd acts
// as that command.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/term"

	"hubd/internal/daemon"
	"hubd/internal/sendmail"
	"hubd/internal/telemetry"
	"hubd/policy"
	"hubd/policy/passhash"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	switch filepath.Base(os.Args[0]) {
	case "sendmail", "mailq", "newaliases":
		os.Exit(dropIn(os.Args[0], os.Args[1:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// dropIn runs sendmail, mailq or newaliases (internal/sendmail).
func dropIn(name string, args []string) int {
	return sendmail.Main(name, args, sendmail.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "routes":
		return cmdRoutes(args[1:], stdout, stderr, nil)
	case "sendmail", "mailq", "newaliases":
		return dropIn(args[0], args[1:])
	case "hash-password":
		return cmdHashPassword(args[1:], os.Stdin, stdout, stderr)
	case "dkim":
		return cmdDKIM(args[1:], stdout, stderr) // dkim.go
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "hubd", version)
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "hubd: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  hubd run   -config PATH   start the daemon on the configuration at PATH (file or directory)
  hubd check -config PATH [-paths=false]
                            validate the configuration and exit (non-zero on errors); also check, as
                            the current user, the directories hubd writes and the files it reads
  hubd routes -config PATH [-size 30MB] [-resolve=false] [address...]
                            print the routing table, and for each address its connector, next hop and why
  hubd sendmail [options] [recipient...]
                            sendmail(1): queue the message on stdin through the maildrop
  hubd mailq [--json]       list the queue as Postfix's mailq does
  hubd newaliases           check the aliases files; ask a running hubd to reload
  hubd hash-password [-argon2id]
                            read a password (one line) on stdin, print its hash for password_hash
                            (bcrypt, cost 12; -argon2id: Argon2id, 64 MiB, 3 passes, 4 lanes)
  hubd dkim keygen -domain D -selector S [-algorithm rsa|ed25519] [-bits 2048] [-out FILE]
                            write a DKIM signing key (mode 0600); print its DNS TXT record and HCL block
  hubd version              print the version
`)
}

// parseFlags parses "-config PATH" (and -log-level for run); extra adds a
// command's own flags.
func parseFlags(name string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (path, level string, ok bool) {
	fs := flag.NewFlagSet("hubd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&path, "config", "/etc/hubd/hubd.hcl", "configuration file or directory of *.hcl files")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	for _, f := range extra {
		f(fs)
	}
	if err := fs.Parse(args); err != nil {
		return "", "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hubd %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", "", false
	}
	return path, level, true
}

// loadConfig loads and validates PATH, printing diagnostics (errors and
// warnings) with source snippets to w.
func loadConfig(path string, w io.Writer) (*policy.Config, error) {
	cfg, err := policy.Load(path)
	color := isTerminal(w)
	var le *policy.LoadError
	if errors.As(err, &le) {
		le.Write(w, color)
		return nil, err
	}
	if err != nil {
		fmt.Fprintf(w, "hubd: %v\n", err)
		return nil, err
	}
	if len(cfg.Warnings) > 0 {
		policy.WriteDiagnostics(w, cfg.Files(), cfg.Warnings, color)
	}
	return cfg, nil
}

// isTerminal says whether w is a terminal (diagnostics get colour).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// cmdCheck validates the configuration and, unless -paths=false, probes
// the paths it names as the current user (paths.go).
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	probe := true
	path, _, ok := parseFlags("check", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&probe, "paths", true, "check that the directories hubd writes and the files it reads are usable by this user")
	})
	if !ok {
		return 2
	}
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return 1
	}
	if probe {
		if diags := checkPaths(cfg); len(diags) > 0 {
			policy.WriteDiagnostics(stderr, cfg.Files(), diags, isTerminal(stderr))
			if diags.HasErrors() {
				fmt.Fprintf(stderr, "%s: hubd run would fail (%d errors)\n", path, len(diags.Errs()))
				return 1
			}
		}
	}
	fmt.Fprintf(stdout, "%s: configuration OK (%d receive connectors, %d send connectors, %d accepted domains, %d mailboxes)\n",
		path, len(cfg.ReceiveConnectors), len(cfg.SendConnectors), len(cfg.AcceptedDomains), len(cfg.Mailboxes))
	return 0
}

func cmdRun(args []string, stderr io.Writer) int {
	path, level, ok := parseFlags("run", args, stderr)
	if !ok {
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintf(stderr, "hubd run: bad -log-level %q\n", level)
		return 2
	}
	cfg, err := loadConfig(path, stderr)
	if err != nil {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Telemetry first: every later log line goes through its handler
	// (trace_id/span_id, text or JSON, optionally OTLP), and its providers
	// are flushed last, after the daemon has stopped, so that the spans of
	// the final deliveries leave too.
	tel, err := telemetry.Build(ctx, cfg.Telemetry, version, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "hubd run: %v\n", err)
		return 1
	}
	log := slog.New(tel.LogHandler(lv))
	defer flushTelemetry(tel, log)
	if a := tel.MetricsAddr(); a != nil {
		log.Info("listening", "prometheus_metrics", "http://"+a.String()+"/metrics")
	}
	// SIGHUP is caught from before start-up: a reload asked for early (by
	// systemd once READY=1 is out) waits instead of killing the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	manager := newServiceManager(log)
	opts := daemon.Options{Logger: log, ConfigPath: path, Version: version, DiagnosticsOut: stderr,
		TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider}
	manager.hooks(&opts)
	d, err := daemon.Start(ctx, cfg, opts)
	if err != nil {
		manager.startFailed(err)
		log.Error("start failed", "err", err)
		return 1
	}
	addrs := d.Addrs()
	for _, bind := range slices.Sorted(maps.Keys(addrs)) {
		log.Info("listening", "bind", bind, "addr", addrs[bind].String())
	}
	log.Info("listening", "admin_socket", d.AdminSocket())
	if a := d.AdminTCP(); a != nil {
		log.Info("listening", "admin_tcp", a.String())
	}
	log.Info("hubd started", "version", version, "config", path, "pid", os.Getpid())
	manager.ready(d)

	ticks, stopTicks := manager.ticks()
	defer stopTicks()
	for {
		select {
		case <-hup:
			reload(d, log)
		case <-ticks:
			manager.status(d)
		case <-ctx.Done():
			manager.stopping(d.Config().Hub.ShutdownGrace)
			log.Info("stopping", "grace", d.Config().Hub.ShutdownGrace)
			if err := shutdown(d); err != nil {
				log.Error("shutdown", "err", err)
				return 1
			}
			log.Info("hubd stopped")
			return 0
		}
	}
}

// cmdHashPassword prints a hash for password_hash (mailbox or user blocks,
// users_file), so that no plaintext password ever goes into
// configuration: bcrypt at cost 12 by default, Argon2id with -argon2id
// (policy/passhash: RFC 9106's second recommended parameters). The
// password is read from the terminal without echo, or as one line from a
// pipe.
func cmdHashPassword(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubd hash-password", flag.ContinueOnError)
	fs.SetOutput(stderr)
	useArgon := fs.Bool("argon2id", false, "make an Argon2id hash instead of bcrypt")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hubd hash-password: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var pw []byte
	var err error
	if term.IsTerminal(int(stdin.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		pw, err = term.ReadPassword(int(stdin.Fd()))
		fmt.Fprintln(stderr)
	} else {
		var line string
		line, err = bufio.NewReader(stdin).ReadString('\n')
		if err == io.EOF && line != "" {
			err = nil
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	}
	if err != nil {
		fmt.Fprintf(stderr, "hubd hash-password: %v\n", err)
		return 1
	}
	if len(pw) == 0 {
		fmt.Fprintln(stderr, "hubd hash-password: empty password")
		return 1
	}
	var hash string
	if *useArgon {
		hash, err = passhash.HashArgon2id(string(pw), passhash.DefaultArgon2)
	} else {
		hash, err = passhash.HashBcrypt(string(pw), 12)
	}
	if err != nil { // e.g. bcrypt.ErrPasswordTooLong: over 72 bytes
		fmt.Fprintf(stderr, "hubd hash-password: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, hash)
	return 0
}
