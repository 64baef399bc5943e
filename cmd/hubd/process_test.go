package main

// Helpers for tests that run hubd as a real child process: build once, start
// on a config, wait for its ports, signal it, read its log.

import (
	"fmt"
	"hubd/internal/logbuf"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

var hubdBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hubd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hubdBinary = filepath.Join(dir, "hubd")
	// Built without -race on purpose: the crash test measures the real binary.
	out, err := exec.Command("go", "build", "-o", hubdBinary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building hubd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubdProcess is one running hubd.
type hubdProcess struct {
	cmd  *exec.Cmd
	out  *logbuf.Buffer
	done chan struct{}
	err  error // exit error, valid after done is closed
}

// startHubd starts `hubd run -config cfg` and waits until every address in
// ready accepts TCP connections.
func startHubd(t testing.TB, cfg string, ready ...string) *hubdProcess {
	t.Helper()
	return startBinary(t, hubdBinary, cfg, ready...)
}

// startBinary is startHubd with another build of hubd.
func startBinary(t testing.TB, bin, cfg string, ready ...string) *hubdProcess {
	t.Helper()
	return startWithEnv(t, bin, cfg, nil, ready...)
}

// startWithEnv is startBinary with env ("NAME=value") added to the
// test's environment.
func startWithEnv(t testing.TB, bin, cfg string, env []string, ready ...string) *hubdProcess {
	t.Helper()
	p := &hubdProcess{out: &logbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "-config", cfg)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("hubd output:\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, addr := range ready {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				t.Fatalf("hubd exited before listening on %s: %v\n%s", addr, p.err, p.out.String())
			case <-tick.C:
			}
			if time.Now().After(deadline) {
				t.Fatalf("hubd not listening on %s after 20s\n%s", addr, p.out.String())
			}
		}
	}
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *hubdProcess) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to timeout for a clean exit; it returns
// the exit error (nil for exit status 0).
func (p *hubdProcess) stop(t testing.TB, timeout time.Duration) error {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("hubd did not exit %v after SIGTERM\n%s", timeout, p.out.String())
		return nil
	}
}

// freePort returns a loopback address with a port nobody listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeConfig writes src as dir/hubd.hcl and returns its path.
func writeConfig(t testing.TB, dir, src string) string {
	t.Helper()
	path := filepath.Join(dir, "hubd.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitWithin polls cond every interval until it holds, and fails the test
// when timeout passes first.
func waitWithin(t testing.TB, timeout, every time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		<-tick.C
	}
}
