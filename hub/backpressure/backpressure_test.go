package backpressure

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/policy"
)

const (
	mb = 1 << 20
	gb = 1 << 30
)

// fakeProbe reports figures the test sets.
type fakeProbe struct {
	mu              sync.Mutex
	free, total     uint64
	rss, ram        uint64
	diskErr, memErr error
	diskCalls       int
	lastDir         string
	called          chan struct{} // signalled (without blocking) on every DiskUsage
}

func (p *fakeProbe) DiskUsage(path string) (uint64, uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.diskCalls++
	p.lastDir = path
	select {
	case p.called <- struct{}{}:
	default:
	}
	return p.free, p.total, p.diskErr
}

func (p *fakeProbe) Memory() (uint64, uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rss, p.ram, p.memErr
}

func (p *fakeProbe) setFree(free uint64) {
	p.mu.Lock()
	p.free = free
	p.mu.Unlock()
}

func (p *fakeProbe) setRSS(rss uint64) {
	p.mu.Lock()
	p.rss = rss
	p.mu.Unlock()
}

func (p *fakeProbe) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.diskCalls
}

// logRecorder is a slog.Handler that keeps the records it is given.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

// take returns the records logged since the last take, as "LEVEL message".
func (h *logRecorder) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		out = append(out, r.Level.String()+" "+r.Message)
	}
	h.records = nil
	return out
}

// enabled is the policy default configuration.
func enabled() policy.BackPressure {
	return policy.BackPressure{Enabled: true, DiskFreeHigh: 500 * mb, MemoryHighPercent: 75, MemoryMediumPercent: 73,
		CheckInterval: 2 * time.Second}
}

type fixture struct {
	m     *Monitor
	probe *fakeProbe
	logs  *logRecorder
	now   time.Time
}

// newFixture: a 10 GB spool with plenty free, 1 GB of 8 GB RAM in use.
func newFixture(t *testing.T, cfg policy.BackPressure) *fixture {
	t.Helper()
	f := &fixture{
		probe: &fakeProbe{free: 5 * gb, total: 10 * gb, rss: 1 * gb, ram: 8 * gb, called: make(chan struct{}, 1)},
		logs:  &logRecorder{},
		now:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	f.m = New(Options{Dir: "/spool", Config: cfg, Probe: f.probe, Logger: slog.New(f.logs),
		Clock: func() time.Time { return f.now }})
	t.Cleanup(f.m.Stop)
	return f
}

// step sets the free space, advances the clock, checks and asserts the level.
func (f *fixture) step(t *testing.T, free uint64, want Level) {
	t.Helper()
	f.probe.setFree(free)
	f.now = f.now.Add(time.Second)
	f.m.Check()
	if got := f.m.Level(); got != want {
		t.Fatalf("free %d: level %v, want %v (status %+v)", free, got, want, f.m.Status().Disk)
	}
}

func TestLevelString(t *testing.T) {
	for l, want := range map[Level]string{Normal: "normal", Medium: "medium", High: "high", 7: "level(7)"} {
		if got := l.String(); got != want {
			t.Errorf("%d: %q, want %q", int(l), got, want)
		}
		if b, _ := l.MarshalText(); string(b) != want {
			t.Errorf("%d: MarshalText %q", int(l), b)
		}
	}
}

// The defaults on a 10 GB filesystem: High under 500 MB, Medium under
// 500 MB + 2% (204.8 MB), Normal again from 500 MB + 4%.
func TestDiskDefaultsFromTotal(t *testing.T) {
	f := newFixture(t, enabled())
	f.m.Check()
	d := f.m.Status().Disk
	margin := uint64(10*gb) / 50
	if d.HighUnder != 500*mb || d.MediumUnder != 500*mb+margin || d.NormalFrom != 500*mb+2*margin {
		t.Fatalf("thresholds %d %d %d, want %d %d %d", d.HighUnder, d.MediumUnder, d.NormalFrom,
			500*mb, 500*mb+margin, 500*mb+2*margin)
	}
	if f.probe.lastDir != "/spool" {
		t.Errorf("probed %q, want the spool dir", f.probe.lastDir)
	}
	// A bigger filesystem moves Medium and Normal, not High.
	f.probe.mu.Lock()
	f.probe.total = 100 * gb
	f.probe.mu.Unlock()
	f.m.Check()
	d = f.m.Status().Disk
	if d.HighUnder != 500*mb || d.MediumUnder != 500*mb+2*gb || d.NormalFrom != 500*mb+4*gb {
		t.Fatalf("100 GB thresholds %d %d %d", d.HighUnder, d.MediumUnder, d.NormalFrom)
	}
}

func TestDiskTransitionsWithHysteresis(t *testing.T) {
	f := newFixture(t, enabled())
	margin := uint64(10*gb) / 50
	high, medium, normal := uint64(500*mb), 500*mb+margin, 500*mb+2*margin

	f.step(t, normal+1, Normal)
	f.step(t, medium, Normal) // at the threshold: not yet below it
	f.step(t, medium-1, Medium)
	f.step(t, medium, Medium) // hovering at the boundary does not flap
	f.step(t, medium-1, Medium)
	f.step(t, normal-1, Medium) // still short of Normal
	f.step(t, high, Medium)
	f.step(t, high-1, High)
	f.step(t, high, High) // hovering at the High boundary does not flap
	f.step(t, high+1, High)
	f.step(t, medium-1, High)
	f.step(t, medium, Medium) // falls once clear of the Medium threshold
	f.step(t, medium-1, Medium)
	f.step(t, normal-1, Medium)
	f.step(t, normal, Normal)
	f.step(t, medium, Normal)

	// Straight from Normal to High, and from High to Normal.
	f.step(t, 1*mb, High)
	f.step(t, 9*gb, Normal)
}

func TestDiskExplicitMedium(t *testing.T) {
	cfg := enabled()
	cfg.DiskFreeMedium = 1 * gb
	f := newFixture(t, cfg)
	margin := uint64(10*gb) / 50
	f.step(t, 1*gb, Normal)
	f.step(t, 1*gb-1, Medium)
	f.step(t, 1*gb+margin-1, Medium) // Normal again only from DiskFreeMedium + 2%
	f.step(t, 1*gb+margin, Normal)
	f.step(t, 500*mb-1, High)
	f.step(t, 1*gb-1, High)
	f.step(t, 1*gb, Medium)
	if d := f.m.Status().Disk; d.MediumUnder != 1*gb || d.NormalFrom != 1*gb+margin {
		t.Fatalf("thresholds %+v", d)
	}
}

func TestMemoryLevels(t *testing.T) {
	f := newFixture(t, enabled())
	ram := uint64(8 * gb)
	mem := func(rss uint64, want Level) {
		t.Helper()
		f.probe.setRSS(rss)
		f.m.Check()
		if got := f.m.Level(); got != want {
			t.Fatalf("rss %d (%.3f%%): level %v, want %v", rss, float64(rss)*100/float64(ram), got, want)
		}
	}
	// ceil(p% of RAM) is the first byte count at p%.
	at := func(p uint64) uint64 { return (ram*p + 99) / 100 }
	mem(at(71), Normal)
	mem(at(73)-1, Normal)
	mem(at(73), Medium)
	mem(at(73)-1, Medium) // hysteresis: Normal only below 71%
	mem(at(71), Medium)
	mem(at(71)-1, Normal)
	mem(at(75)-1, Medium)
	mem(at(75), High)
	mem(at(75)-1, High) // High until under 73%
	mem(at(73), High)
	mem(at(73)-1, Medium)
	mem(at(71)-1, Normal)

	st := f.m.Status().Memory
	if !st.Known || st.HighAt != 75 || st.MediumAt != 73 || st.NormalUnder != 71 || st.Total != ram {
		t.Fatalf("memory status %+v", st)
	}
}

func TestHighestResourceWins(t *testing.T) {
	f := newFixture(t, enabled())
	f.probe.setRSS(7 * gb) // 87.5%: High
	f.probe.setFree(600 * mb)
	f.m.Check()
	st := f.m.Status()
	if st.Level != High || st.Memory.Level != High || st.Disk.Level != Medium {
		t.Fatalf("level %v, memory %v, disk %v", st.Level, st.Memory.Level, st.Disk.Level)
	}
	f.probe.setRSS(1 * gb)
	f.m.Check()
	if st := f.m.Status(); st.Level != Medium || st.Memory.Level != Normal {
		t.Fatalf("after memory recovers: level %v, memory %v", st.Level, st.Memory.Level)
	}
	f.probe.setFree(5 * gb)
	f.m.Check()
	if f.m.Level() != Normal {
		t.Fatalf("level %v, want normal", f.m.Level())
	}
}

func TestDisabled(t *testing.T) {
	cfg := enabled()
	cfg.Enabled = false
	f := newFixture(t, cfg)
	f.probe.setFree(1 * mb)
	f.m.Start()
	f.m.Check()
	if f.m.Level() != Normal || f.probe.calls() != 0 {
		t.Fatalf("disabled: level %v, %d probes", f.m.Level(), f.probe.calls())
	}
	if f.m.loop != nil {
		t.Fatal("disabled monitor started a goroutine")
	}
	if !f.m.Reserve(100 * gb) {
		t.Fatal("disabled monitor refused a reservation")
	}
	if err := f.m.Admit(true); err != nil {
		t.Fatalf("disabled monitor refused: %v", err)
	}
	if st := f.m.Status(); st.Enabled || st.Level != Normal {
		t.Fatalf("status %+v", st)
	}
}

func TestNilMonitor(t *testing.T) {
	var m *Monitor
	if m.Level() != Normal || m.Admit(true) != nil || !m.Reserve(1) || m.Status().Level != Normal {
		t.Fatal("a nil monitor must admit everything")
	}
}

func TestAdmit(t *testing.T) {
	f := newFixture(t, enabled())
	f.step(t, 600*mb, Medium)
	if err := f.m.Admit(false); err != nil {
		t.Fatalf("medium refused an authenticated session: %v", err)
	}
	err := f.m.Admit(true)
	var r *policy.Reply
	if !errors.As(err, &r) || r.Error() != "452 4.3.1 Insufficient system resources" {
		t.Fatalf("medium, anonymous: %v", err)
	}
	f.step(t, 100*mb, High)
	if err := f.m.Admit(false); err == nil || err.Error() != "452 4.3.1 Insufficient system resources" {
		t.Fatalf("high, authenticated: %v", err)
	}
}

func TestReloadChangesThresholds(t *testing.T) {
	f := newFixture(t, enabled())
	f.step(t, 1*gb, Normal)
	cfg := enabled()
	cfg.DiskFreeHigh = 2 * gb
	f.m.Reload(cfg) // checks at once
	if f.m.Level() != High {
		t.Fatalf("after raising disk_free_high: %v", f.m.Level())
	}
	// Back to the defaults, 1 GB is Normal even coming from High: it is
	// past 500 MB + 4% of 10 GB.
	f.m.Reload(enabled())
	if got := f.m.Level(); got != Normal {
		t.Fatalf("back to defaults: %v", got)
	}
	cfg.DiskFreeHigh = 900 * mb
	f.m.Reload(cfg)
	if got := f.m.Level(); got != Medium {
		t.Fatalf("1 GB free with High under 900 MB: %v, want medium (under 900 MB + 204.8 MB)", got)
	}
	cfg.Enabled = false
	f.m.Reload(cfg)
	if got := f.m.Level(); got != Normal {
		t.Fatalf("disabled by reload: %v", got)
	}
	cfg.Enabled = true
	f.m.Reload(cfg)
	if got := f.m.Level(); got != Medium {
		t.Fatalf("enabled again by reload: %v", got)
	}
}

func TestReserve(t *testing.T) {
	f := newFixture(t, enabled())
	if !f.m.Reserve(1 * gb) {
		t.Fatal("Reserve before any check must not refuse (free space unknown)")
	}
	f.step(t, 600*mb, Medium)
	if !f.m.Reserve(60 * mb) {
		t.Fatal("refused 60 MB with 100 MB to spare")
	}
	if f.m.Reserve(40*mb + 1) {
		t.Fatal("granted 40 MB + 1 with 40 MB to spare: would cross High")
	}
	if !f.m.Reserve(40 * mb) {
		t.Fatal("refused exactly the 40 MB to spare")
	}
	if f.m.Reserve(1) {
		t.Fatal("granted a byte at the High threshold")
	}
	if st := f.m.Status().Disk; st.Reserved != 100*mb {
		t.Fatalf("reserved %d, want 100 MB", st.Reserved)
	}
	// A check takes a fresh figure and forgets reservations.
	f.step(t, 550*mb, Medium)
	if st := f.m.Status().Disk; st.Reserved != 0 {
		t.Fatalf("reserved %d after check", st.Reserved)
	}
	if f.m.Reserve(51*mb) || !f.m.Reserve(50*mb) {
		t.Fatal("after check: want 50 MB to spare")
	}
	f.step(t, 400*mb, High)
	if f.m.Reserve(0) {
		t.Fatal("granted a reservation below High")
	}
	// Unknown free space: the queue's ENOSPC handling is the backstop.
	f.probe.mu.Lock()
	f.probe.diskErr = errors.New("statfs /spool: no such file or directory")
	f.probe.mu.Unlock()
	f.m.Check()
	if !f.m.Reserve(1 * gb) {
		t.Fatal("refused with free space unknown")
	}
}

func TestReserveConcurrent(t *testing.T) {
	f := newFixture(t, enabled())
	f.step(t, 600*mb, Medium) // 100 MB to spare
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 50 {
		wg.Go(func() {
			if f.m.Reserve(10 * mb) {
				mu.Lock()
				granted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if granted != 10 {
		t.Fatalf("granted %d reservations of 10 MB out of 100 MB, want 10", granted)
	}
}

func TestStatusFigures(t *testing.T) {
	f := newFixture(t, enabled())
	start := f.now
	if st := f.m.Status(); !st.Enabled || st.Level != Normal || !st.Since.Equal(start) || !st.Checked.IsZero() || st.Disk.Known {
		t.Fatalf("initial status %+v", st)
	}
	f.probe.setRSS(2 * gb)
	f.step(t, 600*mb, Medium)
	st := f.m.Status()
	if !st.Since.Equal(start.Add(time.Second)) || !st.Checked.Equal(st.Since) {
		t.Fatalf("since %v checked %v", st.Since, st.Checked)
	}
	if d := st.Disk; !d.Known || d.Level != Medium || d.Free != 600*mb || d.Total != 10*gb || d.Error != "" {
		t.Fatalf("disk %+v", d)
	}
	if m := st.Memory; !m.Known || m.Level != Normal || m.RSS != 2*gb || m.Total != 8*gb || m.Percent != 25 {
		t.Fatalf("memory %+v", m)
	}
	f.step(t, 650*mb, Medium)
	if st2 := f.m.Status(); !st2.Since.Equal(st.Since) || !st2.Checked.After(st.Checked) {
		t.Fatalf("since must stay while the level does: %v → %v", st.Since, st2.Since)
	}
}

func TestLogLines(t *testing.T) {
	f := newFixture(t, enabled())
	f.step(t, 5*gb, Normal)
	f.step(t, 612*mb, Medium)
	f.step(t, 600*mb, Medium) // no change, no line
	f.step(t, 400*mb, High)
	f.step(t, 650*mb, High)
	f.step(t, 800*mb, Medium)
	f.step(t, 1*gb, Normal)
	f.probe.setRSS(6500 * mb) // 79.3% of 8 GB
	f.m.Check()
	want := []string{
		"WARN back pressure medium: spool filesystem 612 MB free of 10 GB (medium under 705 MB)",
		"WARN back pressure high: spool filesystem 400 MB free of 10 GB (high under 500 MB)",
		"INFO back pressure medium: spool filesystem 800 MB free of 10 GB (medium until 910 MB free)",
		"INFO back pressure normal: spool filesystem 1 GB free of 10 GB (medium under 705 MB); " +
			"process memory 1 GB of 8 GB RAM (12.5%, medium at 73%)",
		"WARN back pressure high: process memory 6.3 GB of 8 GB RAM (79.3%, high at 75%)",
	}
	got := f.logs.take()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestProbeErrorsLoggedOnce(t *testing.T) {
	f := newFixture(t, enabled())
	f.probe.mu.Lock()
	f.probe.memErr = errors.New("memory: open /proc/self/status: no such file or directory")
	f.probe.mu.Unlock()
	f.probe.setFree(100 * mb)
	for range 3 {
		f.m.Check()
	}
	got := f.logs.take()
	want := []string{
		"WARN back pressure: cannot measure process memory; ignoring it",
		"WARN back pressure high: spool filesystem 100 MB free of 10 GB (high under 500 MB)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log lines:\n%s", strings.Join(got, "\n"))
	}
	if st := f.m.Status().Memory; st.Known || !strings.Contains(st.Error, "/proc/self/status") {
		t.Fatalf("memory status %+v", st)
	}
	// A disk that cannot be measured is ignored too: the level falls.
	f.probe.mu.Lock()
	f.probe.diskErr = errors.New("statfs: boom")
	f.probe.mu.Unlock()
	f.m.Check()
	f.m.Check()
	got = f.logs.take()
	want = []string{
		"WARN back pressure: cannot measure the spool filesystem; ignoring it",
		"INFO back pressure normal",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log lines:\n%s", strings.Join(got, "\n"))
	}
	f.probe.mu.Lock()
	f.probe.diskErr, f.probe.memErr = nil, nil
	f.probe.mu.Unlock()
	f.m.Check()
	if got := f.logs.take(); len(got) != 3 || got[0] != "INFO back pressure: spool filesystem measured again" {
		t.Fatalf("recovery lines: %q", got)
	}
}

func TestStartChecksPeriodically(t *testing.T) {
	cfg := enabled()
	cfg.CheckInterval = 5 * time.Millisecond
	f := newFixture(t, cfg)
	f.probe.setFree(100 * mb)
	f.m.Start()
	// Start checks before it returns.
	if f.m.Level() != High {
		t.Fatalf("after Start: %v", f.m.Level())
	}
	f.probe.setFree(5 * gb)
	waitFor(t, f.probe.called, func() bool { return f.m.Level() == Normal })
	f.m.Start() // idempotent
	cfg.CheckInterval = time.Hour
	f.m.Reload(cfg) // restarts the loop with the new interval
	f.m.Stop()
	f.m.Stop()
	n := f.probe.calls()
	f.probe.setFree(100 * mb)
	if f.m.loop != nil || f.probe.calls() != n || f.m.Level() != Normal {
		t.Fatal("the loop still runs after Stop")
	}
}

// waitFor re-evaluates cond each time the monitor probes, until a deadline.
func waitFor(t *testing.T, probed <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-probed:
		case <-deadline:
			t.Fatal("condition not met within 5s")
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 512: "512 B", 1024: "1 KB", 1536: "1.5 KB", 612 * mb: "612 MB", 10 * gb: "10 GB",
		1288 * mb: "1.3 GB", 1 << 40: "1 TB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestFitsReservesNothing: asking whether a declared size fits never uses
// up the reserve, however often a client asks.
func TestFitsReservesNothing(t *testing.T) {
	p := &fakeProbe{free: 3 * gb, total: 100 * gb, rss: 100 * mb, ram: 16 * gb}
	cfg := enabled()
	cfg.DiskFreeHigh = gb
	m := New(Options{Dir: "/spool", Config: cfg, Probe: p})
	m.Check()
	for range 1000 {
		if !m.Fits(1 << 30) {
			t.Fatal("a declared size that fits was refused after repeated asking")
		}
	}
	if m.Fits(2<<30 + 1) {
		t.Error("a size that would cross High fits")
	}
	if !m.Reserve(1 << 30) {
		t.Fatal("Reserve refused")
	}
	if m.Fits(1<<30 + 1) {
		t.Error("Fits ignores what was reserved")
	}
}
