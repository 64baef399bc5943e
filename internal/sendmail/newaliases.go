package sendmail

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"

	"hubd/internal/admin"
	"hubd/policy"
)

// newaliases (also sendmail -bi or -I, hubd newaliases) is Postfix's
// newaliases for hubd's aliases files (policy: aliases_file blocks). There
// is no database to rebuild: hubd reads the files with the rest of its
// configuration. So newaliases
//
//  1. loads and validates the whole configuration, aliases files included,
//     as `hubd check` does; on errors it prints every diagnostic with its
//     file:line and snippet on stderr and exits 78 (EX_CONFIG);
//  2. asks a running hubd to reload (POST /v1/reload on the admin socket)
//     and prints the outcome: applied (exit 0), or refused, with hubd's
//     diagnostics on stderr (exit 78; the running configuration stays);
//  3. when hubd is not running (no socket, or nobody listening on it) it
//     says so and exits 0, as Postfix's newaliases works with the mail
//     system down: hubd reads the files when it starts.
//
// Loading the whole configuration needs the rights hubd has on its files
// (TLS keys, token files), so newaliases is for root or the hubd user, as
// Postfix's is for root. No permission on the admin socket exits 77
// (EX_NOPERM); an admin API that answers with an error, 69.
//
//	newaliases [-C PATH | -config PATH] [-v]

func runNewaliases(args []string, std IO) error {
	o := &options{}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case (a == "-C" || a == "-config" || a == "--config") && i+1 < len(args):
			i++
			o.config = args[i]
		case strings.HasPrefix(a, "-config=") || strings.HasPrefix(a, "--config="):
			_, o.config, _ = strings.Cut(a, "=")
		case strings.HasPrefix(a, "-C") && len(a) > 2:
			o.config = a[2:]
		case a == "-v":
		default:
			return fail(ExUsage, "unknown argument %q (usage: newaliases [-C config])", a)
		}
	}
	return newaliases(o, std)
}

func newaliases(o *options, std IO) error {
	path := configPath(o.config, std)
	cfg, err := policy.Load(path)
	var le *policy.LoadError
	switch {
	case errors.As(err, &le):
		le.Write(std.Stderr, false)
		return fail(ExConfig, "%s: %s; nothing was reloaded", path, errorPositions(le.Diags))
	case errors.Is(err, fs.ErrPermission):
		return fail(ExNoPerm, "cannot read the configuration: %v (run newaliases as root or as the hubd user)", err)
	case err != nil:
		return fail(ExConfig, "cannot read the configuration: %v", err)
	}
	fromFiles := 0
	for _, a := range cfg.Aliases {
		if a.Source != "" {
			fromFiles++
		}
	}
	checked := fmt.Sprintf("%s: configuration OK, %d aliases from aliases files", path, fromFiles)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	socket := cfg.Admin.Socket
	res, err := admin.NewClient(socket, "").Reload(ctx)
	var unavailable *admin.UnavailableError
	switch {
	case errors.As(err, &unavailable) && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)):
		fmt.Fprintf(std.Stdout, "newaliases: %s; hubd is not running; the aliases will be read when it starts\n", checked)
		return nil
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return fail(ExNoPerm, "%s, but hubd's admin socket %s refuses us: %v (run newaliases as root, the hubd user "+
			"or a member of the admin socket's group)", checked, socket, err)
	case err != nil:
		return fail(ExUnavailable, "%s, but asking hubd to reload through %s failed: %v", checked, socket, err)
	}
	if !res.Applied {
		fmt.Fprintln(std.Stderr, "newaliases: hubd refused the configuration; the running configuration stays in force:")
		for _, d := range res.Diagnostics {
			fmt.Fprintf(std.Stderr, "  %s\n", d)
		}
		return fail(ExConfig, "the aliases were not reloaded")
	}
	fmt.Fprintf(std.Stdout, "newaliases: %s; hubd reloaded it (config %s)\n", checked, res.ConfigHash)
	for _, d := range res.Diagnostics { // warnings
		fmt.Fprintf(std.Stderr, "newaliases: %s\n", d)
	}
	if h := cfg.Hash(); res.ConfigHash != h {
		// hubd reloads the path it was started with; tell the operator
		// when that is not what was checked here (or the files changed
		// in between).
		fmt.Fprintf(std.Stderr, "newaliases: note: hubd's configuration (%s) is not the one checked here (%s, %s); "+
			"is hubd started with another -config?\n", res.ConfigHash, path, h)
	}
	return nil
}

// errorPositions is "2 errors (at /etc/aliases:2:6, /etc/aliases:3:4)": a
// summary after the diagnostics, for logs that keep the last line only.
func errorPositions(diags hcl.Diagnostics) string {
	var at []string
	n := 0
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		n++
		if d.Subject != nil && len(at) < 10 {
			at = append(at, fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column))
		}
	}
	s := fmt.Sprintf("%d errors", n)
	if n == 1 {
		s = "1 error"
	}
	if len(at) > 0 {
		s += " (at " + strings.Join(at, ", ")
		if n > len(at) {
			s += ", ..."
		}
		s += ")"
	}
	return s
}
