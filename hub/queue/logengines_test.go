package queue

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// engine is a Store implementation the contract tests run against.
type engine struct {
	name string
	open func(dir string) (Store, error)
	// marksLeft lists the active marks left in the spool at dir.
	marksLeft func(t *testing.T, dir string) []string
}

var engines = []engine{
	{"disk", func(dir string) (Store, error) { return OpenDisk(DiskOptions{Dir: dir}) }, activeMarks},
	{"log", func(dir string) (Store, error) { return OpenLog(LogOptions{Dir: dir}) }, logMarksLeft},
}

// forEngines runs test once per engine, as a subtest.
func forEngines(t *testing.T, test func(t *testing.T, e engine)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { test(t, e) })
	}
}

// openEngine opens e's store on dir, closed when the test ends.
func openEngine(t testing.TB, e engine, dir string) Store {
	t.Helper()
	s, err := e.open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func logMarksLeft(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "log", "active"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}
