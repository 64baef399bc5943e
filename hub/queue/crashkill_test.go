package queue

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hubd/hub"
)

// The parent side of the kill -9 tests (TestLogCrashKill,
// TestLogCompactionCrashKill): a child process, the test binary running a
// *Child test on the spool, prints a line for everything the spool
// acknowledged; the parent kills it in the middle of that stream, opens
// the spool and checks that nothing acknowledged was lost.

// runKilled starts the test binary running the test named child with
// env added to its environment, hands the fields of each line it prints
// to ack, and SIGKILLs it after killAt lines. A line the kill cut short
// was never complete, so it was not acknowledged. The child must end by
// the kill, not by itself.
func runKilled(t *testing.T, round int, child string, env []string, killAt int, ack func(f []string) bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+child+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	lines := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
		if !ack(strings.Fields(line)) {
			t.Fatalf("round %d: child said %q", round, line)
		}
		if lines++; lines == killAt {
			cmd.Process.Kill()
		}
	}
	werr := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("round %d: child ended by itself after %d lines: %v", round, lines, werr)
	}
}

// acked is what killed children acknowledged on one spool, over rounds.
type acked struct {
	put      map[hub.QueueID]int  // Put, with the crashBody length
	removing map[hub.QueueID]bool // a Remove may have been in flight at the kill
	removed  map[hub.QueueID]bool // Remove acknowledged
}

func newAcked() *acked {
	return &acked{put: map[hub.QueueID]int{}, removing: map[hub.QueueID]bool{}, removed: map[hub.QueueID]bool{}}
}

// check loads s and fails unless every acknowledged message is there with
// its body and no acknowledged removal came back; each message found is
// also handed to more, when not nil. A message whose Remove was in flight
// and is gone counts as removed from now on. It returns how many messages
// the spool holds.
func (a *acked) check(t *testing.T, round int, s *LogStore, more func(m *Message)) int {
	t.Helper()
	got := mustLoad(t, s)
	have := map[hub.QueueID]*Message{}
	for _, m := range got {
		have[m.ID] = m
	}
	for id, n := range a.put {
		m := have[id]
		switch {
		case a.removed[id]:
			if m != nil {
				t.Fatalf("round %d: %s came back after its Remove was acknowledged", round, id)
			}
			continue
		case m == nil && a.removing[id]:
			a.removed[id] = true // its Remove was durable, not acknowledged
			continue
		case m == nil:
			t.Fatalf("round %d: acknowledged %s lost", round, id)
		}
		if b := readBody(t, s, id); b != crashBody(string(id), n) {
			t.Fatalf("round %d: %s: body of %d bytes differs", round, id, len(b))
		}
		if more != nil {
			more(m)
		}
	}
	return len(got)
}

// The child side: childSpool opens and loads the spool of opts; each of
// workers goroutines then runs work(w, say, fail) until the kill, where
// say prints an acknowledgement line and fail ends the child with the
// error. A child never outlives its parent by much (a minute).
func childSpool(t *testing.T, opts LogOptions, workers int, work func(w int, s *LogStore, say func(string), fail func(error))) {
	s, err := OpenLog(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	say := func(line string) {
		mu.Lock()
		os.Stdout.WriteString(line + "\n")
		mu.Unlock()
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	time.AfterFunc(time.Minute, func() { os.Exit(3) })
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { work(w, s, say, fail) })
	}
	wg.Wait()
}
