package main

// Helpers of the daemon commands (connector, status, reload, routes,
// track, config): flags anywhere after the subcommand, and the exit codes
// of sysexits.h that every hubctl command uses:
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
	"io"
	"net/url"

	"hubd/internal/admin"
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
// reached, 1 when the API answered with an error.
func apiFailed(e *env, err error) int {
	var ae *admin.APIError
	if errors.As(err, &ae) {
		fmt.Fprintf(e.stderr, "hubctl: %s\n", ae.Msg)
		return 1
	}
	fmt.Fprintf(e.stderr, "hubctl: cannot reach hubd's admin API at %s: %v\n", e.addr, unwrapURLError(err))
	return 69
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
func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
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
