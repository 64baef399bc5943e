package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestBuildTagsKeepTemplatesOut: hubd as make build builds it (the
// Makefile's TAGS) links neither text/template nor html/template. Either
// one calls methods by name through reflect, which makes the linker keep
// every exported method of every reachable type: 3.3 MB more of mapped code
// and tables, most of it resident in every hubd (see the Makefile). grpc
// brings them in through golang.org/x/net/trace unless built with
// grpcnotrace; this fails if that stops working or another dependency
// brings them back.
func TestBuildTagsKeepTemplatesOut(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TAGS\s*\?=\s*(.*)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no TAGS ?= line in the Makefile")
	}
	tags := strings.TrimSpace(string(m[1]))
	out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps -tags %q: %v\n%s", tags, err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "text/template" || pkg == "html/template" {
			t.Errorf("hubd built with -tags %q links %s (go mod why -m, or go list -deps -f '{{.ImportPath}}: {{.Imports}}', says who imports it)", tags, pkg)
		}
	}
}
