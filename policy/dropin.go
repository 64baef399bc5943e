package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

// DropIn is what sendmail, mailq and newaliases need to know of the
// configuration: they run as any local user, so they cannot Load it (a TLS
// key or a recipients file may be readable by the hubd user only, and the
// full validation is hubd's business). LoadDropIn reads the hub block alone
// and nothing else; whatever it finds is checked again by `hubd check`.
type DropIn struct {
	Hostname    string // hub.hostname, or the system's host name
	SpoolDir    string
	MaildropDir string // hub.maildrop_dir, default <spool_dir>/../maildrop
	AdminSocket string // admin.socket, default <spool_dir>/../admin.sock
}

// LoadDropIn reads the hub block (and the admin block's socket) of the file,
// or of the *.hcl files of the directory, at path. Relative paths resolve
// against the file's directory, as Load resolves them. Unknown attributes and
// blocks are ignored; only syntax errors and a missing spool_dir are errors.
func LoadDropIn(path string) (DropIn, error) {
	var d DropIn
	files := []string{path}
	if st, err := os.Stat(path); err != nil {
		return d, err
	} else if st.IsDir() {
		files, _ = filepath.Glob(filepath.Join(path, "*.hcl"))
		sort.Strings(files)
		if len(files) == 0 {
			return d, fmt.Errorf("no *.hcl files in %s", path)
		}
	}
	p := hclparse.NewParser()
	for _, name := range files {
		f, diags := p.ParseHCLFile(name)
		if diags.HasErrors() {
			return d, diags
		}
		abs, err := filepath.Abs(name)
		if err != nil {
			return d, err
		}
		dir := filepath.Dir(abs)
		content, _, _ := f.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "hub"}, {Type: "admin"}}})
		for _, b := range content.Blocks {
			attrs, _, _ := b.Body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{
				{Name: "hostname"}, {Name: "spool_dir"}, {Name: "maildrop_dir"}, {Name: "socket"}}})
			for n, a := range attrs.Attributes {
				v, diags := a.Expr.Value(nil)
				if diags.HasErrors() || v.Type() != cty.String || v.IsNull() {
					return d, fmt.Errorf("%s: %s must be a string", a.Range, n)
				}
				s := v.AsString()
				switch {
				case b.Type == "hub" && n == "hostname":
					d.Hostname = strings.ToLower(strings.TrimSuffix(s, "."))
				case b.Type == "hub" && n == "spool_dir":
					d.SpoolDir = resolve(dir, s)
				case b.Type == "hub" && n == "maildrop_dir":
					d.MaildropDir = resolve(dir, s)
				case b.Type == "admin" && n == "socket":
					d.AdminSocket = resolve(dir, s)
				}
			}
		}
	}
	if d.SpoolDir == "" {
		return d, fmt.Errorf("%s: the hub block has no spool_dir", path)
	}
	if d.MaildropDir == "" {
		d.MaildropDir = filepath.Join(filepath.Dir(d.SpoolDir), "maildrop")
	}
	if d.AdminSocket == "" {
		d.AdminSocket = filepath.Join(filepath.Dir(d.SpoolDir), "admin.sock")
	}
	if d.Hostname == "" {
		name, err := os.Hostname()
		if err != nil {
			return d, fmt.Errorf("the hub block has no hostname and the system's is unknown: %v", err)
		}
		d.Hostname = strings.ToLower(name)
	}
	return d, nil
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}
