package admin

import "net/http"

// daemonRoutes registers the daemon half of the API (served over Daemon).
func (s *Server) daemonRoutes(mux *http.ServeMux) {
	// TODO(admin-daemon): /v1/status, /v1/connectors..., /v1/routes, /v1/track, /v1/reload
}
