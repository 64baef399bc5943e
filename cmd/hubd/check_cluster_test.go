package main

import (
	"strings"
	"testing"
)

// The three nodes of examples/cluster/ are valid configurations.
func TestCheckClusterExamples(t *testing.T) {
	for _, n := range []string{"a", "b", "c"} {
		out, code := runHubd(t, "check", "-config", "../../examples/cluster/"+n+".hcl")
		if code != 0 || !strings.Contains(out, "configuration OK") {
			t.Errorf("hubd check examples/cluster/%s.hcl: exit %d\n%s", n, code, out)
		}
	}
}
