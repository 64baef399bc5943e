package admin

// The daemon half of the API, served over Daemon. Errors: 400 for a
// malformed request (bad size, since or limit), 404 for an unknown
// connector, 409 for a request the state forbids (a connector already
// stopped or disabled by the configuration, a disabled tracking log), 500
// otherwise. A reload that the configuration refuses is not an HTTP error:
// it is 200 with "applied": false and every diagnostic, since the request
// was carried out.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"hubd/hub/tracking"
	"hubd/policy"
)

// daemonRoutes registers the daemon half of the API (served over Daemon).
func (s *Server) daemonRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("GET /v1/cluster", s.handleCluster)
	mux.HandleFunc("GET /v1/connectors", s.handleConnectors)
	mux.HandleFunc("POST /v1/connectors/{name}/stop", s.connectorAction(Daemon.StopConnector,
		"stopped (runtime override; config says enabled): gone at the next reload or restart"))
	mux.HandleFunc("POST /v1/connectors/{name}/start", s.connectorAction(Daemon.StartConnector,
		"started: the runtime override ended, the connector runs as the config says"))
	mux.HandleFunc("GET /v1/routes", s.handleRoutes)
	mux.HandleFunc("GET /v1/track", s.handleTrack)
	mux.HandleFunc("POST /v1/reload", s.handleReload)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.daemon.Status(r.Context())
	s.reply(w, r, st, err)
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	st, err := s.daemon.Cluster(r.Context())
	s.reply(w, r, st, err)
}

func (s *Server) handleConnectors(w http.ResponseWriter, r *http.Request) {
	list, err := s.daemon.Connectors(r.Context())
	s.reply(w, r, list, err)
}

// connectorAction is POST /v1/connectors/{name}/stop and .../start.
func (s *Server) connectorAction(act func(Daemon, context.Context, string) error, done string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		err := act(s.daemon, r.Context(), name)
		s.reply(w, r, ActionResult{ID: name, OK: true, Message: done}, err)
	}
}

// handleRoutes is GET /v1/routes?address=A&address=B&size=30MB.
func (s *Server) handleRoutes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var size int64
	if v := q.Get("size"); v != "" && v != "0" {
		n, err := policy.ParseSize(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("size: %w", err))
			return
		}
		size = n
	}
	rep, err := s.daemon.Routes(r.Context(), q["address"], size)
	s.reply(w, r, rep, err)
}

// handleTrack is GET /v1/track?message_id=&queue_id=&sender=&recipient=&since=&limit=.
// since is a duration back from now ("2h") or an RFC 3339 time.
func (s *Server) handleTrack(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := tracking.Filter{MessageID: q.Get("message_id"), QueueID: q.Get("queue_id"),
		Sender: q.Get("sender"), Recipient: q.Get("recipient")}
	if v := q.Get("since"); v != "" {
		t, err := ParseSince(v, time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		f.Since = t
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit: %q is not a count", v))
			return
		}
		limit = n
	}
	events, err := s.daemon.Track(r.Context(), f, limit)
	s.reply(w, r, events, err)
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	res, err := s.daemon.Reload(r.Context())
	s.reply(w, r, res, err)
}

// reply writes v, or err with the status its kind calls for.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	}
	if code == http.StatusInternalServerError {
		s.log.Error("admin API", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err)
}

// ParseSince reads a --since value: a duration back from now ("90m", "2h",
// "3d") or an RFC 3339 time.
func ParseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := policy.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("since: %q is neither a duration (2h, 3d) nor an RFC 3339 time", v)
	}
	return now.Add(-d), nil
}
