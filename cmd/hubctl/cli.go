package main

// Helpers every hubctl command uses: flags anywhere after the subcommand,
// JSON output, and the exit codes of sysexits.h:
//
//	0   done
//	1   the API refused or failed the request (unknown connector, a
//	    connector already stopped, a reload refused), or a config check failed
//	64  usage (EX_USAGE)
//	69  hubd is unreachable (EX_UNAVAILABLE): the message names the socket

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"

	"hubd/internal/admin"
)

// Exit codes (sysexits.h where one fits).
const (
	exitOK          = 0
	exitFailed      = 1  // an action failed (each failure is named on stderr)
	exitUsage       = 64 // EX_USAGE
	exitUnavailable = 69 // EX_UNAVAILABLE: hubd cannot be reached
)

// newFlags is a FlagSet for "hubctl WORDS" with --json, which may also
// follow the subcommand.
func newFlags(e *env, words string) *flag.FlagSet {
	fs := flag.NewFlagSet("hubctl "+words, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.BoolVar(&e.json, "json", e.json, "print JSON instead of tables")
	return fs
}

// parseInterspersed parses flags wherever they are among args and returns
// the other arguments in order ("connector stop inbound --json").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		if args[0] == "--" {
			return append(rest, args[1:]...), nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

// apiFailed reports err and returns the exit code: 69 when hubd cannot be
// reached (the message names the socket or URL), 1 otherwise (the API
// refused or failed the request, or its reply could not be read).
func apiFailed(e *env, err error) int {
	var ae *admin.APIError
	var un *admin.UnavailableError
	switch {
	case errors.As(err, &ae):
		fmt.Fprintf(e.stderr, "hubctl: %s\n", ae.Msg)
		return exitFailed
	case errors.As(err, &un):
		fmt.Fprintf(e.stderr, "hubctl: cannot reach hubd's admin API at %s: %v (is hubd running? use -socket or HUBD_ADMIN_SOCKET)\n",
			un.Addr, unwrapURLError(un.Err))
		return exitUnavailable
	default:
		fmt.Fprintf(e.stderr, "hubctl: %v\n", err)
		return exitFailed
	}
}

// unwrapURLError drops net/http's `Get "http://hubd/v1/...":` prefix,
// which names no real URL on a Unix socket.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// printJSON writes v indented.
func printJSON(e *env, v any) int {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

// usageError prints msg and the command's usage line, and returns 64.
func usageError(e *env, msg, usage string) int {
	fmt.Fprintf(e.stderr, "hubctl: %s\nusage: hubctl %s\n", msg, usage)
	return 64
}
