// Package backpressure is the hub's resource monitor, after Exchange 2007's
// back pressure: it watches free space on the spool's filesystem and the
// process's resident memory, and condenses them into one Level that the
// receive connectors consult on every MAIL FROM and the transport consults
// before it stores a message.
//
// # Levels
//
// Normal accepts everything. Medium refuses new transactions from anonymous
// sessions while authenticated and internal mail still flows; High refuses
// every new transaction. Both refusals are 452 4.3.1 Insufficient system
// resources (Admit builds the reply). The monitor's level is the highest of
// its resources' levels.
//
// # Thresholds and hysteresis
//
// Each resource has three thresholds: one to rise to Medium, one to rise to
// High, and a lower one to fall back to Normal. Like Exchange, a resource
// falls from High to Medium only once it is back on the Normal side of the
// Medium threshold, and from Medium to Normal only past the Normal threshold,
// so a figure hovering on a boundary never makes the level flap.
//
// Spool filesystem (free space as seen by an unprivileged process, so the
// blocks reserved for root do not count), with margin = 2% of the
// filesystem's size, recomputed at every check:
//
//	High    free < DiskFreeHigh                        (default 500 MB)
//	Medium  free < DiskFreeMedium                      (default DiskFreeHigh + margin)
//	Normal  free ≥ DiskFreeHigh + 2×margin             (DiskFreeMedium left at 0)
//	        free ≥ DiskFreeMedium + margin             (DiskFreeMedium set explicitly)
//
// Process memory (resident set size as a percentage of the machine's RAM):
//
//	High    ≥ MemoryHighPercent                        (default 75)
//	Medium  ≥ MemoryMediumPercent                      (default 73)
//	Normal  < MemoryMediumPercent − 2
//
// These follow the Exchange 2010 SP1 defaults (High at 500 MB free, Medium
// and Normal 2% and 4% of the disk further, EdgeTransport memory 75/73/71%).
//
// A resource whose probe fails (no statfs or no /proc on this platform, the
// spool directory missing) is ignored — it counts as Normal — and the failure
// is logged once at Warn until the probe works again. The queue's own
// handling of ENOSPC (452 4.3.1 Insufficient system storage) stays the last
// line of defence.
//
// # Never accepting what cannot be stored
//
// Reserve(n) answers, before the transport writes a message of n bytes,
// whether free space minus n would stay at or above DiskFreeHigh. It
// subtracts from the last statfs figure everything reserved since that
// check, so concurrent submissions between two checks cannot together
// overshoot. Each Check takes a fresh figure and forgets the reservations,
// because the bytes already written are now in that figure. The bound on the
// race: bytes reserved but not yet written when Check samples the filesystem
// are forgotten too, so the hub may overcommit by at most what is in flight
// at that instant (concurrent submissions × their sizes), plus whatever else
// writes to the filesystem between checks (queue records, logs, other
// programs). DiskFreeHigh is the cushion that absorbs this; it must be much
// larger than that sum, which the 500 MB default is for ordinary message
// sizes. Space freed between checks is seen only at the next check, which
// errs on the side of refusing.
//
// # Logging
//
// Every change of the monitor's level is logged once, at Warn when it rises
// and at Info when it falls, with the figures of the resources responsible,
// e.g. "back pressure medium: spool filesystem 612 MB free of 10 GB (medium
// under 705 MB)". Sizes are binary (1 MB = 2^20 bytes), as in the
// configuration.
//
// Disabled (Config.Enabled false), the monitor is always Normal, Reserve
// always says yes, and Start runs no goroutine.
package backpressure

import (
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"hubd/policy"
)

// Level is a back pressure level. Levels are ordered: a higher level is more
// pressure.
type Level int

const (
	Normal Level = iota // accept everything
	Medium              // refuse anonymous sessions
	High                // refuse all new transactions
)

// String returns "normal", "medium" or "high".
func (l Level) String() string {
	switch l {
	case Normal:
		return "normal"
	case Medium:
		return "medium"
	case High:
		return "high"
	}
	return "level(" + itoa(int64(l)) + ")"
}

// MarshalText makes a Level appear as its name in JSON (hubctl, metrics).
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// Probe measures the resources the monitor watches. Tests inject a fake;
// nil in Options means SystemProbe.
type Probe interface {
	// DiskUsage reports the free space available to an unprivileged
	// process and the total size of the filesystem holding path, in bytes.
	DiskUsage(path string) (free, total uint64, err error)
	// Memory reports this process's resident set size and the machine's
	// total RAM, in bytes.
	Memory() (processRSS, totalRAM uint64, err error)
}

// Options configures a Monitor.
type Options struct {
	Dir    string              // the spool directory; its filesystem is watched
	Config policy.BackPressure // zero numeric fields take the defaults of policy
	Probe  Probe               // nil → SystemProbe{}
	Logger *slog.Logger        // nil → discard
	Clock  func() time.Time    // nil → time.Now; stamps Status.Since and Status.Checked
}

// Monitor tracks the back pressure level. All methods are safe for
// concurrent use; Level and Admit are a single atomic load.
type Monitor struct {
	dir   string
	probe Probe
	log   *slog.Logger
	now   func() time.Time

	level atomic.Int32 // the current Level, for the hot path

	// checkMu serialises Check and the state changes of Reload, so that
	// transitions are computed from one previous state at a time. It is
	// never held while taking runMu.
	checkMu       sync.Mutex
	diskErrLogged bool // guarded by checkMu
	memErrLogged  bool // guarded by checkMu

	mu       sync.Mutex // guards cfg, st and reserved
	cfg      policy.BackPressure
	st       Status
	reserved uint64 // bytes granted by Reserve since the last disk figure

	runMu   sync.Mutex // guards started and loop
	started bool
	loop    *loop
}

// New returns a Monitor at Normal. It measures nothing until Check or Start.
func New(o Options) *Monitor {
	m := &Monitor{dir: o.Dir, probe: o.Probe, log: o.Logger, now: o.Clock, cfg: withDefaults(o.Config)}
	if m.probe == nil {
		m.probe = SystemProbe{}
	}
	if m.log == nil {
		m.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.st = Status{Enabled: m.cfg.Enabled, Level: Normal, Since: m.now()}
	return m
}

// withDefaults fills zero fields with the defaults policy.Load applies, so
// that a hand-built Config (tests, tools) behaves like a loaded one.
func withDefaults(c policy.BackPressure) policy.BackPressure {
	if c.DiskFreeHigh <= 0 {
		c.DiskFreeHigh = 500 << 20
	}
	if c.DiskFreeMedium < 0 {
		c.DiskFreeMedium = 0
	}
	if c.MemoryHighPercent <= 0 {
		c.MemoryHighPercent = 75
	}
	if c.MemoryMediumPercent <= 0 {
		c.MemoryMediumPercent = 73
	}
	if c.MemoryMediumPercent > c.MemoryHighPercent {
		c.MemoryMediumPercent = c.MemoryHighPercent
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = 2 * time.Second
	}
	return c
}

// Level returns the current level; Normal when disabled or on a nil Monitor.
func (m *Monitor) Level() Level {
	if m == nil {
		return Normal
	}
	return Level(m.level.Load())
}

// Admit is the MAIL FROM decision: nil to go on, or the 452 4.3.1 reply
// (a *policy.Reply) when the level refuses this session — anonymous
// sessions from Medium up, every session at High. A nil Monitor admits all.
func (m *Monitor) Admit(anonymous bool) error {
	switch l := m.Level(); {
	case l >= High, l >= Medium && anonymous:
		return &policy.Reply{Code: 452, Enhanced: "4.3.1", Text: "Insufficient system resources"}
	}
	return nil
}

// Reserve asks whether a message of n bytes may be written to the spool:
// true when free space minus what was reserved since the last check minus n
// stays at or above DiskFreeHigh, and then n is counted as reserved until
// the next check. See the package documentation for the race bound. It
// returns true when the monitor is disabled or the spool's free space is
// unknown (never measured, or the probe failed).
func (m *Monitor) Reserve(n int64) bool {
	if m == nil {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.fitsLocked(n) {
		return false
	}
	m.reserved += uint64(max(n, 0))
	return true
}

// Fits is Reserve without the reservation: whether n more bytes would keep
// the spool at or above DiskFreeHigh, given what is reserved now. It is what
// a MAIL FROM with SIZE= asks: the declaration alone must not use up the
// reserve (a client could repeat MAIL SIZE=max / RSET to refuse everyone).
func (m *Monitor) Fits(n int64) bool {
	if m == nil {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fitsLocked(n)
}

// fitsLocked reports whether n more bytes keep the spool at or above
// DiskFreeHigh after what is reserved; true when disabled or the free space
// is unknown. m.mu is held.
func (m *Monitor) fitsLocked(n int64) bool {
	if !m.cfg.Enabled || !m.st.Disk.Known {
		return true
	}
	need := uint64(max(n, 0))
	free := m.st.Disk.Free - min(m.reserved, m.st.Disk.Free)
	return need <= free && free-need >= uint64(m.cfg.DiskFreeHigh)
}

// Status returns a snapshot of the monitor's state and last figures (the
// zero Status, which reads as disabled and Normal, on a nil Monitor).
func (m *Monitor) Status() Status {
	if m == nil {
		return Status{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.st
	st.Disk.Reserved = m.reserved
	return st
}

// Reload applies a new configuration: thresholds take effect at once (Reload
// checks immediately), a new CheckInterval restarts the ticker, and
// disabling drops the level to Normal and stops the goroutine. Resource
// levels carry over, so hysteresis holds across a reload.
func (m *Monitor) Reload(c policy.BackPressure) {
	c = withDefaults(c)
	m.checkMu.Lock()
	m.mu.Lock()
	m.cfg = c
	m.st.Enabled = c.Enabled
	var prev Level
	if !c.Enabled {
		prev = m.st.Level
		m.st = Status{Enabled: false, Level: Normal, Since: m.st.Since}
		if prev != Normal {
			m.st.Since = m.now()
		}
		m.reserved = 0
		m.level.Store(int32(Normal))
	}
	m.mu.Unlock()
	m.checkMu.Unlock()
	if !c.Enabled && prev != Normal {
		m.log.Info("back pressure normal: monitoring disabled", "level", Normal, "previous", prev)
	}

	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.started {
		m.stopLoop()
		m.startLoop() // checks at once when enabled
		return
	}
	if c.Enabled {
		m.Check()
	}
}

// Start checks once, so the level is right before the first session, and
// then runs a goroutine that checks every CheckInterval until Stop. It does
// nothing more when the monitor is disabled (no goroutine) or already
// started.
func (m *Monitor) Start() {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.started {
		return
	}
	m.started = true
	m.startLoop()
}

// Stop ends the goroutine Start began and waits for it. The level stays
// where it was. Stop may be called more than once.
func (m *Monitor) Stop() {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	m.started = false
	m.stopLoop()
}

// loop is one run of the checking goroutine.
type loop struct {
	stop chan struct{}
	done chan struct{}
}

// startLoop starts the goroutine when enabled. runMu must be held.
func (m *Monitor) startLoop() {
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()
	if m.loop != nil || !cfg.Enabled {
		return
	}
	m.Check()
	l := &loop{stop: make(chan struct{}), done: make(chan struct{})}
	m.loop = l
	go func() {
		defer close(l.done)
		t := time.NewTicker(cfg.CheckInterval)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				m.Check()
			}
		}
	}()
}

// stopLoop stops the goroutine, if any, and waits for it. runMu must be held.
func (m *Monitor) stopLoop() {
	if m.loop == nil {
		return
	}
	close(m.loop.stop)
	<-m.loop.done
	m.loop = nil
}
