package connectors

// Connectors at runtime: what `hubctl connector list` shows, and the one
// runtime override an operator may set on a receive connector, stop.
//
// # Stop and start: a runtime override
//
// StopConnector stops a connector the configuration enables; StartConnector
// ends that. The override lives in memory only: it is never written
// anywhere, a restart starts every connector the configuration enables, and
// a reload drops every override (DESIGN.md invariant 5, "config is the
// truth"; Exchange's Set-ReceiveConnector -Enabled:$false, by contrast,
// writes the directory, and this is the lesson of the seed: state that
// outlives the process belongs in the configuration file). Both are logged
// at warning level, and every view of the connector says
// "stopped (runtime override; config says enabled)".
//
// What a stopped connector does:
//
//   - Sessions already open finish as they would have (a message in DATA is
//     never cut).
//   - On a bind address that no running connector serves any more, the
//     listener is closed: new connections are refused by the kernel, as for
//     a Postfix master.cf service that is commented out. Start listens
//     again on the address the listener had (the same port, also when the
//     configuration says port 0).
//   - On a bind address shared with running connectors, the listener stays
//     open for them. A connection that would pick the stopped connector
//     (its remote_ip_ranges match the peer most specifically) gets
//     "421 4.3.2 <fqdn> Service not available, closing transmission channel"
//     (RFC 5321 §4.2.3 and §3.8; RFC 3463 §3.5: system not accepting network
//     messages) and is closed. It is never handed to a less specific
//     connector of the same bind: that one has other policy (relay rights,
//     authentication, limits), and a narrow trusted range falling through
//     to the internet connector would change what those clients may do,
//     silently. A 421 makes a well-behaved client retry later.
//
// # Counters
//
// Each connector name has counters that run from the start of the process
// and survive reloads: messages accepted (250 after DATA or the last BDAT)
// and refusals (connections refused before SMTP by a limit or a stopped
// connector, MAIL commands refused, and DATA/BDAT not answered 250).
// "Sessions" is the number of connections the connector holds now, the
// count the inbound connection limits use (connlimit.go).

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
)

// Errors of StopConnector and StartConnector. The admin API answers 404
// for ErrUnknownConnector and 409 for the others.
var (
	ErrUnknownConnector = errors.New("no receive connector by that name")
	ErrDisabledByConfig = errors.New("the receive connector is disabled by the configuration (enabled = false); enable it there and reload")
	ErrConnectorStopped = errors.New("the receive connector is already stopped")
	ErrConnectorRunning = errors.New("the receive connector is running (no runtime override to end)")
	errNotRunning       = errors.New("the receive connectors are not running")
)

// State texts of ConnectorState.State.
const (
	StateRunning  = "running"
	StateDisabled = "disabled"
	StateStopped  = "stopped (runtime override; config says enabled)"
)

// connStats are one connector name's counters since the process started.
type connStats struct {
	accepted atomic.Int64
	refused  atomic.Int64
}

// ConnectorState is one receive connector of the configuration in force
// as it runs now.
type ConnectorState struct {
	Name           string
	Usage          string
	Bind           []string
	RemoteIPRanges []string
	Enabled        bool   // as the configuration says
	Stopped        bool   // a runtime override stops it
	State          string // StateRunning, StateDisabled or StateStopped
	Sessions       int    // connections open now
	Accepted       int64  // messages accepted since start
	Refused        int64  // connections and transactions refused since start
}

// Connectors returns every receive connector of the configuration in
// force, disabled ones included, in configuration order.
func (s *Service) Connectors() []ConnectorState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ConnectorState, 0, len(s.cfg.ReceiveConnectors))
	for _, rc := range s.cfg.ReceiveConnectors {
		st := ConnectorState{Name: rc.Name, Usage: string(rc.Usage), Bind: slices.Clone(rc.Bind),
			Enabled: rc.Enabled, Stopped: s.stopped[rc.Name], State: StateRunning}
		if st.Usage == "" {
			st.Usage = "custom"
		}
		for _, r := range rc.RemoteIPRanges {
			st.RemoteIPRanges = append(st.RemoteIPRanges, r.Text)
		}
		switch {
		case !rc.Enabled:
			st.State = StateDisabled
		case st.Stopped:
			st.State = StateStopped
		}
		if cc := s.counts[rc.Name]; cc != nil {
			st.Sessions = cc.total
		}
		if cs := s.stats[rc.Name]; cs != nil {
			st.Accepted, st.Refused = cs.accepted.Load(), cs.refused.Load()
		}
		out = append(out, st)
	}
	return out
}

// Stopped returns the connectors a runtime override stops, sorted.
func (s *Service) Stopped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedKeys(s.stopped)
}

// StopConnector stops the named connector until StartConnector, a reload
// or a restart, and returns the listener addresses it closed (those no
// running connector serves any more). See the package comment above.
func (s *Service) StopConnector(name string) (closed []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.overridable(name); err != nil {
		return nil, err
	}
	if s.stopped[name] {
		return nil, fmt.Errorf("%s: %w", name, ErrConnectorStopped)
	}
	s.stopped[name] = true
	want := s.wantedBinds()
	for _, bind := range sortedKeys(s.listeners) {
		if want[bind] {
			continue
		}
		ln := s.listeners[bind]
		s.lastAddr[bind] = ln.Addr().String()
		ln.Close()
		delete(s.listeners, bind)
		closed = append(closed, bind)
	}
	s.log.Warn("receive connector stopped (runtime override; config says enabled)",
		"connector", name, "listeners_closed", closed)
	return closed, nil
}

// StartConnector ends StopConnector's override, listening again where the
// connector's binds were closed, and returns those addresses. If a listener
// cannot be opened, the connector stays stopped.
func (s *Service) StartConnector(name string) (opened []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.overridable(name); err != nil {
		return nil, err
	}
	if !s.stopped[name] {
		return nil, fmt.Errorf("%s: %w", name, ErrConnectorRunning)
	}
	delete(s.stopped, name)
	lns, err := s.listenMissing(s.wantedBinds())
	if err != nil {
		s.stopped[name] = true
		return nil, err
	}
	for _, bind := range sortedKeys(lns) {
		s.startListener(bind, lns[bind])
		opened = append(opened, bind)
	}
	s.log.Warn("receive connector started (runtime override ended; as the config says)",
		"connector", name, "listeners_opened", opened)
	return opened, nil
}

// overridable checks that name is an enabled connector of a running
// Service. s.mu is held.
func (s *Service) overridable(name string) error {
	if !s.started || s.closed {
		return errNotRunning
	}
	for _, rc := range s.cfg.ReceiveConnectors {
		if rc.Name != name {
			continue
		}
		if !rc.Enabled {
			return fmt.Errorf("%s: %w", name, ErrDisabledByConfig)
		}
		return nil
	}
	return fmt.Errorf("%q: %w", name, ErrUnknownConnector)
}

// wantedBinds are the bind addresses of the enabled connectors of s.cfg
// that no override stops. s.mu is held.
func (s *Service) wantedBinds() map[string]bool {
	want := map[string]bool{}
	for _, rc := range s.cfg.ReceiveConnectors {
		if rc.Enabled && !s.stopped[rc.Name] {
			for _, b := range rc.Bind {
				want[b] = true
			}
		}
	}
	return want
}

// listenMissing opens a listener for every bind in want that has none,
// all or nothing: on an error the ones opened are closed again. s.mu is
// held.
func (s *Service) listenMissing(want map[string]bool) (map[string]net.Listener, error) {
	opened := map[string]net.Listener{}
	for _, bind := range sortedKeys(want) {
		if s.listeners[bind] != nil {
			continue
		}
		ln, err := s.listen(bind)
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
			return nil, fmt.Errorf("connectors: listen %s: %w", bind, err)
		}
		opened[bind] = ln
	}
	return opened, nil
}

// listen listens on bind, at the address it had before if it was closed
// (a port-0 bind keeps its port across a stop and start), else as written.
// s.mu is held.
func (s *Service) listen(bind string) (net.Listener, error) {
	if a, ok := s.lastAddr[bind]; ok {
		if ln, err := net.Listen("tcp", a); err == nil {
			return ln, nil
		}
	}
	return net.Listen("tcp", bind)
}

// startListener registers ln for bind and accepts on it. s.mu is held.
func (s *Service) startListener(bind string, ln net.Listener) {
	s.listeners[bind] = ln
	s.lastAddr[bind] = ln.Addr().String()
	s.wg.Add(1)
	go s.acceptLoop(bind, ln)
}

// statsFor returns name's counters, creating them. s.mu is held.
func (s *Service) statsFor(name string) *connStats {
	cs := s.stats[name]
	if cs == nil {
		cs = &connStats{}
		s.stats[name] = cs
	}
	return cs
}

// countRefused counts a connection refused before SMTP for name.
func (s *Service) countRefused(name string) {
	if name == "" {
		return
	}
	s.mu.Lock()
	cs := s.statsFor(name)
	s.mu.Unlock()
	cs.refused.Add(1)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
