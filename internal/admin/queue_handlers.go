package admin

import "net/http"

// queueRoutes registers the queue half of the API (served over ops.Queue).
func (s *Server) queueRoutes(mux *http.ServeMux) {
	// TODO(admin-queue): /v1/queues..., /v1/messages...
}
