package admin_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"hubd/internal/admintest"
)

// TestAPIReloadUnderLoad: eight clients send continuously while the
// configuration is reloaded six times (over the API and through
// Daemon.Reload, which SIGHUP calls): no session is refused or cut, every
// message is accepted, and sessions that start after a reload greet with
// its banner.
func TestAPIReloadUnderLoad(t *testing.T) {
	h := admintest.Start(t, hubHCL("banner 0", ""))
	addr := h.Addr("127.0.0.1:0")
	load := admintest.StartLoad(addr, "bob@example.test", 8)
	waitSent := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for load.Sent() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d messages sent, want %d", load.Sent(), n)
			}
			<-time.After(5 * time.Millisecond) // a poll interval
		}
	}
	ctx := context.Background()
	for gen := 1; gen <= 6; gen++ {
		waitSent(load.Sent() + 10)
		h.Write(hubHCL(fmt.Sprintf("banner %d", gen), ""))
		if gen%2 == 0 {
			rr, err := h.Client.Reload(ctx)
			if err != nil || !rr.Applied {
				t.Fatalf("reload %d: %+v, %v", gen, rr, err)
			}
		} else if rr, err := h.Reload(ctx); err != nil || !rr.Applied {
			t.Fatalf("reload %d: %+v, %v", gen, rr, err)
		}
		if g := greeting(t, addr, ""); g != fmt.Sprintf("220 banner %d", gen) {
			t.Errorf("a session after reload %d greets %q", gen, g)
		}
	}
	waitSent(load.Sent() + 10)
	sessions, sent, errs, banners := load.Stop()
	if len(errs) > 0 {
		t.Errorf("%d of %d sessions failed under reload, e.g. %s", len(errs), sessions, strings.Join(errs[:min(5, len(errs))], "; "))
	}
	// Each client sees the banners in generation order.
	last := map[string]int{}
	for _, b := range banners {
		var client, gen int
		if _, err := fmt.Sscanf(b, "%d banner %d", &client, &gen); err != nil {
			t.Fatalf("banner %q", b)
		}
		key := fmt.Sprint(client)
		if prev, ok := last[key]; ok && gen < prev {
			t.Errorf("client %d saw banner %d after %d", client, gen, prev)
		}
		last[key] = gen
	}
	t.Logf("%d sessions, %d messages accepted across 6 reloads", sessions, sent)
}
