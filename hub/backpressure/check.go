package backpressure

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"hubd/policy"
)

// Status is a snapshot of the monitor for logs, hubctl and metrics.
type Status struct {
	Enabled bool         `json:"enabled"`
	Level   Level        `json:"level"`   // the highest of the resources' levels
	Since   time.Time    `json:"since"`   // when Level was entered (or the monitor created)
	Checked time.Time    `json:"checked"` // the last Check; zero before the first
	Disk    DiskStatus   `json:"disk"`
	Memory  MemoryStatus `json:"memory"`
}

// DiskStatus is the spool filesystem's part of Status. The thresholds are
// those in force at the last check (they depend on the filesystem's size).
type DiskStatus struct {
	Known       bool   `json:"known"`           // false before the first check or when the probe failed
	Error       string `json:"error,omitempty"` // the probe's error when it failed
	Level       Level  `json:"level"`
	Free        uint64 `json:"free"`         // bytes available to an unprivileged process
	Total       uint64 `json:"total"`        // bytes in the filesystem
	Reserved    uint64 `json:"reserved"`     // bytes granted by Reserve since the check
	HighUnder   uint64 `json:"high_under"`   // High when Free is below this
	MediumUnder uint64 `json:"medium_under"` // Medium when Free is below this
	NormalFrom  uint64 `json:"normal_from"`  // back to Normal when Free is at least this
}

// MemoryStatus is the process memory's part of Status.
type MemoryStatus struct {
	Known       bool    `json:"known"`
	Error       string  `json:"error,omitempty"`
	Level       Level   `json:"level"`
	RSS         uint64  `json:"rss"`          // this process's resident set, bytes
	Total       uint64  `json:"total"`        // the machine's RAM, bytes
	Percent     float64 `json:"percent"`      // RSS as a percentage of Total
	HighAt      int     `json:"high_at"`      // High at this percentage or more
	MediumAt    int     `json:"medium_at"`    // Medium at this percentage or more
	NormalUnder int     `json:"normal_under"` // back to Normal below this percentage
}

// Check measures every resource now and updates the level, logging a change.
// Start's goroutine calls it every CheckInterval; tests call it directly.
// It does nothing when the monitor is disabled.
func (m *Monitor) Check() {
	m.checkMu.Lock()
	defer m.checkMu.Unlock()
	m.mu.Lock()
	cfg, prevDisk, prevMem := m.cfg, m.st.Disk.Level, m.st.Memory.Level
	m.mu.Unlock()
	if !cfg.Enabled {
		return
	}
	disk := m.checkDisk(cfg, prevDisk)
	mem := m.checkMemory(cfg, prevMem)
	now := m.now()

	m.mu.Lock()
	prev := m.st.Level
	level := max(disk.Level, mem.Level)
	m.st.Disk, m.st.Memory, m.st.Checked = disk, mem, now
	// The new figure includes what was written under earlier reservations.
	m.reserved = 0
	if level != prev {
		m.st.Level, m.st.Since = level, now
	}
	st := m.st
	m.level.Store(int32(level))
	m.mu.Unlock()

	if level != prev {
		m.logChange(prev, st)
	}
}

// checkDisk measures the spool's filesystem. checkMu must be held.
func (m *Monitor) checkDisk(cfg policy.BackPressure, prev Level) DiskStatus {
	free, total, err := m.probe.DiskUsage(m.dir)
	if err == nil && total == 0 {
		err = fmt.Errorf("statfs %s: filesystem size 0", m.dir)
	}
	if err != nil {
		if !m.diskErrLogged {
			m.diskErrLogged = true
			m.log.Warn("back pressure: cannot measure the spool filesystem; ignoring it", "dir", m.dir, "err", err)
		}
		return DiskStatus{Error: err.Error()}
	}
	if m.diskErrLogged {
		m.diskErrLogged = false
		m.log.Info("back pressure: spool filesystem measured again", "dir", m.dir)
	}
	t := diskLimits(cfg, total)
	return DiskStatus{
		Known: true, Level: t.level(prev, free), Free: free, Total: total,
		HighUnder: t.high, MediumUnder: t.medium, NormalFrom: t.normal,
	}
}

// checkMemory measures the process's memory. checkMu must be held.
func (m *Monitor) checkMemory(cfg policy.BackPressure, prev Level) MemoryStatus {
	rss, total, err := m.probe.Memory()
	if err == nil && total == 0 {
		err = fmt.Errorf("memory: total RAM 0")
	}
	if err != nil {
		if !m.memErrLogged {
			m.memErrLogged = true
			m.log.Warn("back pressure: cannot measure process memory; ignoring it", "err", err)
		}
		return MemoryStatus{Error: err.Error()}
	}
	if m.memErrLogged {
		m.memErrLogged = false
		m.log.Info("back pressure: process memory measured again")
	}
	t := memoryLimits(cfg)
	return MemoryStatus{
		Known: true, Level: t.level(prev, rss, total), RSS: rss, Total: total,
		Percent: float64(rss) * 100 / float64(total),
		HighAt:  t.high, MediumAt: t.medium, NormalUnder: t.normal,
	}
}

// diskThresholds are free-space limits in bytes: High below high, Medium
// below medium, Normal again from normal.
type diskThresholds struct{ high, medium, normal uint64 }

// diskLimits computes the thresholds for a filesystem of total bytes; the
// margin is 2% of it (Exchange's Medium and Normal steps).
func diskLimits(c policy.BackPressure, total uint64) diskThresholds {
	high := uint64(max(c.DiskFreeHigh, 0))
	margin := total / 50
	if c.DiskFreeMedium > 0 && uint64(c.DiskFreeMedium) > high {
		medium := uint64(c.DiskFreeMedium)
		return diskThresholds{high: high, medium: medium, normal: medium + margin}
	}
	return diskThresholds{high: high, medium: high + margin, normal: high + 2*margin}
}

// level is the disk's new level given its previous one: rising is immediate,
// falling needs the figure to clear the next threshold down (hysteresis).
func (t diskThresholds) level(prev Level, free uint64) Level {
	switch {
	case free < t.high:
		return High
	case prev == High && free < t.medium:
		return High
	case free < t.medium:
		return Medium
	case prev >= Medium && free < t.normal:
		return Medium
	}
	return Normal
}

// memoryThresholds are percentages of RAM: High at or above high, Medium at
// or above medium, Normal again below normal.
type memoryThresholds struct{ high, medium, normal int }

func memoryLimits(c policy.BackPressure) memoryThresholds {
	normal := c.MemoryMediumPercent - 2
	if normal < 1 {
		normal = c.MemoryMediumPercent // too low for a margin: no hysteresis
	}
	return memoryThresholds{high: c.MemoryHighPercent, medium: c.MemoryMediumPercent, normal: normal}
}

// level mirrors diskThresholds.level for memory, where more is worse.
func (t memoryThresholds) level(prev Level, rss, total uint64) Level {
	// rss ≥ pct% of total, in integers: no rounding at the boundary.
	at := func(pct int) bool { return rss*100 >= uint64(pct)*total }
	switch {
	case at(t.high):
		return High
	case prev == High && at(t.medium):
		return High
	case at(t.medium):
		return Medium
	case prev >= Medium && at(t.normal):
		return Medium
	}
	return Normal
}

// logChange logs one change of the monitor's level: Warn when it rises, Info
// when it falls, with the figures of the resources at the new level (all
// known resources when it falls to Normal).
func (m *Monitor) logChange(prev Level, st Status) {
	var parts []string
	attrs := []any{"level", st.Level, "previous", prev}
	if d := st.Disk; d.Known {
		if d.Level == st.Level {
			parts = append(parts, describeDisk(d))
		}
		attrs = append(attrs, "disk_free", d.Free, "disk_total", d.Total, "disk_level", d.Level)
	}
	if mem := st.Memory; mem.Known {
		if mem.Level == st.Level {
			parts = append(parts, describeMemory(mem))
		}
		attrs = append(attrs, "memory_rss", mem.RSS, "memory_total", mem.Total, "memory_level", mem.Level)
	}
	msg := "back pressure " + st.Level.String()
	if len(parts) > 0 {
		msg += ": " + strings.Join(parts, "; ")
	}
	lvl := slog.LevelInfo
	if st.Level > prev {
		lvl = slog.LevelWarn
	}
	m.log.Log(context.Background(), lvl, msg, attrs...)
}

// describeDisk: "spool filesystem 612 MB free of 10 GB (medium under 705 MB)".
// The parenthesis names the rule that holds the level, or for Normal the
// one that would next raise it.
func describeDisk(d DiskStatus) string {
	var rule string
	switch {
	case d.Level == High && d.Free < d.HighUnder:
		rule = "high under " + formatBytes(d.HighUnder)
	case d.Level == High:
		rule = "high until " + formatBytes(d.MediumUnder) + " free"
	case d.Level == Medium && d.Free < d.MediumUnder:
		rule = "medium under " + formatBytes(d.MediumUnder)
	case d.Level == Medium:
		rule = "medium until " + formatBytes(d.NormalFrom) + " free"
	default:
		rule = "medium under " + formatBytes(d.MediumUnder)
	}
	return fmt.Sprintf("spool filesystem %s free of %s (%s)", formatBytes(d.Free), formatBytes(d.Total), rule)
}

// describeMemory: "process memory 6.1 GB of 8 GB RAM (76.2%, high at 75%)".
func describeMemory(mem MemoryStatus) string {
	var rule string
	switch {
	case mem.Level == High && mem.Percent >= float64(mem.HighAt):
		rule = fmt.Sprintf("high at %d%%", mem.HighAt)
	case mem.Level == High:
		rule = fmt.Sprintf("high until under %d%%", mem.MediumAt)
	case mem.Level == Medium && mem.Percent >= float64(mem.MediumAt):
		rule = fmt.Sprintf("medium at %d%%", mem.MediumAt)
	case mem.Level == Medium:
		rule = fmt.Sprintf("medium until under %d%%", mem.NormalUnder)
	default:
		rule = fmt.Sprintf("medium at %d%%", mem.MediumAt)
	}
	return fmt.Sprintf("process memory %s of %s RAM (%s%%, %s)",
		formatBytes(mem.RSS), formatBytes(mem.Total), strconv.FormatFloat(mem.Percent, 'f', 1, 64), rule)
}

// formatBytes renders a size in binary units, as the configuration writes
// them: "612 MB", "1.5 GB", "10 GB", "512 B".
func formatBytes(n uint64) string {
	units := []string{"B", "KB", "MB", "GB", "TB", "PB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return itoa(int64(n)) + " B"
	}
	s := strconv.FormatFloat(v, 'f', 0, 64)
	if v < 10 {
		s = strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
	}
	return s + " " + units[i]
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
