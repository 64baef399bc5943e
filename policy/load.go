package policy

// Loading: parse one file or a directory of *.hcl files, decode each with
// gohcl, then build and validate the Config in one pass that keeps going
// after errors so that the operator sees every problem at once.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// LoadError is returned by Load when the configuration has errors. Diags
// holds every diagnostic (errors and warnings); Files the parsed sources, so
// that Write can show snippets.
type LoadError struct {
	Diags hcl.Diagnostics
	Files map[string]*hcl.File
}

// Error summarises the errors, one per line, each with file:line:col.
func (e *LoadError) Error() string {
	var b strings.Builder
	n := 0
	for _, d := range e.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if n > 0 {
			b.WriteString("\n")
		}
		n++
		if d.Subject != nil {
			fmt.Fprintf(&b, "%s: ", d.Subject)
		}
		b.WriteString(d.Summary)
		if d.Detail != "" {
			b.WriteString("; " + d.Detail)
		}
	}
	return b.String()
}

// Write renders every diagnostic with its source snippet, as HashiCorp tools
// do. color adds terminal colour codes.
func (e *LoadError) Write(w io.Writer, color bool) error {
	return writeDiagnostics(w, e.Files, e.Diags, color)
}

// WriteDiagnostics renders diags (for example Config.Warnings) the same way
// LoadError.Write does. files may be nil: snippets are then left out.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	return writeDiagnostics(w, files, diags, color)
}

func writeDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	return hcl.NewDiagnosticTextWriter(w, files, 100, color).WriteDiagnostics(diags)
}

// Load reads path, a single .hcl file or a directory whose *.hcl files are
// read in name order and merged, and returns the validated Config. On any
// error it returns nil and a *LoadError carrying all diagnostics; warnings
// alone land in Config.Warnings.
func Load(path string) (*Config, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if st.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.hcl"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("policy: no *.hcl files in %s", path)
		}
	}
	l := newLoader()
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, err
		}
		l.parse(f, src, filepath.Dir(abs))
	}
	return l.finish()
}

// LoadBytes is Load for one in-memory file: filename names it in
// diagnostics and baseDir anchors its relative paths.
func LoadBytes(filename string, src []byte, baseDir string) (*Config, error) {
	l := newLoader()
	if abs, err := filepath.Abs(baseDir); err == nil {
		baseDir = abs
	}
	l.parse(filename, src, baseDir)
	return l.finish()
}

// loader accumulates decoded blocks and diagnostics across files.
type loader struct {
	parser       *hclparse.Parser
	diags        hcl.Diagnostics
	dirs         map[string]string // file name (as in ranges) → directory for relative paths
	schema       fileSchema        // blocks of all files, in file order
	cfg          *Config
	rcSources    []rcSource // parallel to cfg.ReceiveConnectors
	sawSyntaxErr bool
	// extraFiles are the sources read besides the HCL files (aliases
	// files and their includes), for snippets and Config.Hash.
	extraFiles map[string]*hcl.File
	// lookupEnv reads the OTEL_* variables of the telemetry block
	// (telemetry_env.go); nil is os.LookupEnv.
	lookupEnv func(string) (string, bool)
}

func newLoader() *loader {
	return &loader{parser: hclparse.NewParser(), dirs: map[string]string{}, cfg: &Config{}, extraFiles: map[string]*hcl.File{}}
}

func (l *loader) parse(filename string, src []byte, dir string) {
	l.dirs[filename] = dir
	f, diags := l.parser.ParseHCL(src, filename)
	l.diags = append(l.diags, diags...)
	if diags.HasErrors() || f == nil {
		// Decoding a body with syntax errors only adds confusing echoes.
		l.sawSyntaxErr = true
		return
	}
	var fs fileSchema
	l.diags = append(l.diags, gohcl.DecodeBody(f.Body, nil, &fs)...)
	l.schema.Hubs = append(l.schema.Hubs, fs.Hubs...)
	l.schema.AcceptedDomains = append(l.schema.AcceptedDomains, fs.AcceptedDomains...)
	l.schema.Mailboxes = append(l.schema.Mailboxes, fs.Mailboxes...)
	l.schema.Aliases = append(l.schema.Aliases, fs.Aliases...)
	l.schema.AliasesFiles = append(l.schema.AliasesFiles, fs.AliasesFiles...)
	l.schema.DistributionLists = append(l.schema.DistributionLists, fs.DistributionLists...)
	l.schema.ReceiveConnectors = append(l.schema.ReceiveConnectors, fs.ReceiveConnectors...)
	l.schema.SendConnectors = append(l.schema.SendConnectors, fs.SendConnectors...)
	l.schema.Admins = append(l.schema.Admins, fs.Admins...)
	l.schema.Users = append(l.schema.Users, fs.Users...)
	l.schema.AuthBackends = append(l.schema.AuthBackends, fs.AuthBackends...)
	l.schema.Telemetries = append(l.schema.Telemetries, fs.Telemetries...)
	l.schema.DKIM = append(l.schema.DKIM, fs.DKIM...)
	l.schema.Queues = append(l.schema.Queues, fs.Queues...)
}

func (l *loader) finish() (*Config, error) {
	if !l.sawSyntaxErr {
		l.build()
	}
	sortByPosition(l.diags)
	if l.diags.HasErrors() {
		return nil, &LoadError{Diags: l.diags, Files: l.files()}
	}
	for _, d := range l.diags {
		if d.Severity == hcl.DiagWarning {
			l.cfg.Warnings = append(l.cfg.Warnings, d)
		}
	}
	l.cfg.files = l.files()
	return l.cfg, nil
}

// files are the HCL files parsed and the other sources read, by name.
func (l *loader) files() map[string]*hcl.File {
	files := maps.Clone(l.parser.Files())
	maps.Copy(files, l.extraFiles)
	return files
}

// sortByPosition orders diagnostics as an operator reads the files: by
// file, then line, then column (validation finds them in another order).
func sortByPosition(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil && b == nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		default:
			return a.Start.Column < b.Start.Column
		}
	})
}

// build turns the decoded schema into l.cfg, validating as it goes.
func (l *loader) build() {
	l.buildHub()
	l.buildDomains()
	l.buildMailboxes()
	l.buildUsers()
	l.buildAuthBackends()
	l.buildAliases()
	l.buildLists()
	l.buildReceiveConnectors()
	l.buildSendConnectors()
	l.buildAdmin()
	l.buildTelemetry()
	l.buildDKIM()
	l.buildQueue() // after buildHub: node and store_dir default from the hub block
	l.collectHubPaths()
	l.cfg.index()
	l.checkBindings()
	l.checkRouting()
}

// errorf records an error diagnostic at rng.
func (l *loader) errorf(rng hcl.Range, summary, detailFormat string, args ...any) {
	l.diags = append(l.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(detailFormat, args...),
		Subject:  rng.Ptr(),
	})
}

// warnf records a warning diagnostic at rng.
func (l *loader) warnf(rng hcl.Range, summary, detailFormat string, args ...any) {
	l.diags = append(l.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(detailFormat, args...),
		Subject:  rng.Ptr(),
	})
}

// path resolves p against the directory of the file rng lies in.
func (l *loader) path(p string, rng hcl.Range) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(l.dirs[rng.Filename], p)
}

// existingFile resolves p and reports an error at rng if it is not a
// readable regular file.
func (l *loader) existingFile(p string, rng hcl.Range, what string) string {
	full := l.path(p, rng)
	st, err := os.Stat(full)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		l.errorf(rng, "Missing "+what, "%s %q (resolved to %s) does not exist.", what, p, full)
	case err != nil:
		l.errorf(rng, "Missing "+what, "%s %q (resolved to %s) cannot be used: %v.", what, p, full, err)
	case !st.Mode().IsRegular():
		l.errorf(rng, "Missing "+what, "%s %q (resolved to %s) is not a regular file.", what, p, full)
	}
	return full
}

// listItem is one string of a list attribute with its own source range.
type listItem struct {
	val string
	rng hcl.Range
}

// stringList decodes a list-of-strings attribute element by element. set is
// false when the attribute is absent (or null), so defaults apply.
func (l *loader) stringList(expr hcl.Expression) (items []listItem, set bool) {
	if expr == nil {
		return nil, false
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		l.diags = append(l.diags, diags...)
		return nil, true
	}
	if v.IsNull() {
		return nil, false
	}
	elems, diags := hcl.ExprList(expr)
	if diags.HasErrors() {
		l.errorf(expr.Range(), "Expected a list of strings", "Write this value as a list, e.g. [\"a\", \"b\"].")
		return nil, true
	}
	for _, e := range elems {
		var s string
		if d := gohcl.DecodeExpression(e, nil, &s); d.HasErrors() {
			l.diags = append(l.diags, d...)
			continue
		}
		items = append(items, listItem{val: s, rng: e.Range()})
	}
	return items, true
}

// duration parses an optional duration attribute, or returns def.
func (l *loader) duration(p *string, rng hcl.Range, def time.Duration) time.Duration {
	if p == nil {
		return def
	}
	d, err := ParseDuration(*p)
	if err != nil {
		l.errorf(rng, "Invalid duration", "%v.", err)
		return def
	}
	return d
}

// size parses an optional size attribute, or returns def.
func (l *loader) size(p *string, rng hcl.Range, def int64) int64 {
	if p == nil {
		return def
	}
	n, err := ParseSize(*p)
	if err != nil {
		l.errorf(rng, "Invalid size", "%v.", err)
		return def
	}
	return n
}

// intAtLeast returns *p (or def), reporting an error when it is below min.
func (l *loader) intAtLeast(p *int, rng hcl.Range, def, min int, name string) int {
	if p == nil {
		return def
	}
	if *p < min {
		l.errorf(rng, "Invalid "+name, "%s must be at least %d, not %d.", name, min, *p)
		return def
	}
	return *p
}

// firstRange is where file-wide errors (no hub block, no connector) point:
// the start of the first file.
func (l *loader) firstRange() hcl.Range {
	names := make([]string, 0, len(l.dirs))
	for n := range l.dirs {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return hcl.Range{}
	}
	return hcl.Range{Filename: names[0], Start: hcl.InitialPos, End: hcl.InitialPos}
}
