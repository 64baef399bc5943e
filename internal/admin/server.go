package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"hubd/hub/ops"
)

// Options configure a Server.
type Options struct {
	Queue  ops.Queue
	Daemon Daemon
	Logger *slog.Logger // nil: discard
}

// Server serves the admin API on the listeners given to Serve.
type Server struct {
	queue  ops.Queue
	daemon Daemon
	log    *slog.Logger
	http   *http.Server

	tcp    *http.Server // the TCP listener's, with the bearer token check (listen.go)
	socket string       // the Unix socket's path, removed at Shutdown
	tcpLn  net.Listener
}

// New returns a Server for o.
func New(o Options) *Server {
	s := &Server{queue: o.Queue, daemon: o.Daemon, log: o.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Handler is the API's http.Handler (tests may serve it themselves).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.queueRoutes(mux)
	s.daemonRoutes(mux)
	return mux
}

// Serve serves ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops serving, letting requests in flight finish until ctx
// ends, and removes the Unix socket it created (listen.go).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if s.tcp != nil {
		if terr := s.tcp.Shutdown(ctx); err == nil {
			err = terr
		}
	}
	if s.socket != "" {
		os.Remove(s.socket)
	}
	return err
}

// writeJSON writes v with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError writes an Error with code.
func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, Error{Error: err.Error()})
}
