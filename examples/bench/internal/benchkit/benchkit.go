// Package benchkit holds the helpers that the benchmark tools under
// examples/bench (relaybench, idleconns, deadhop) share: starting hubd on
// free loopback ports and waiting for it, building the repository's
// commands, reading figures of a process from /proc, and scraping hubd's
// Prometheus endpoint. What a tool measures and reports stays in the tool.
package benchkit

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// FreePort asks the kernel for a free loopback port and closes it again.
// Another process could take it before it is bound; the program that binds
// it then fails loudly, it never measures the wrong thing.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitListening polls addr until it accepts a connection, exited is closed
// (the process exited; nil: never), or within passes.
func WaitListening(addr string, within time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on %s after %s", addr, within)
}

// ErrNoRepo is RepoRoot's error when no hubd repository is found.
var ErrNoRepo = errors.New("no go.mod of module hubd above the working directory")

// RepoRoot is the nearest directory upwards from the working directory that
// holds go.mod with "module hubd".
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			first, _, _ := bytes.Cut(b, []byte("\n"))
			if string(bytes.TrimSpace(first)) == "module hubd" {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoRepo
		}
		dir = parent
	}
}

// BuildTags are the build tags of the Makefile's TAGS, so that a benchmark
// measures the binary make build makes (grpcnotrace: a smaller binary).
const BuildTags = "grpcnotrace"

// Build builds ./cmd/<name> of the repository around the working directory
// into dir and returns the binary's path. Outside the repository its error
// is ErrNoRepo; when go build fails, it holds go build's output.
func Build(dir, name string) (string, error) {
	repo, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-tags", BuildTags, "-o", bin, "./cmd/"+name)
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return bin, nil
}
