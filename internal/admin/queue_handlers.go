package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"hubd/hub/ops"
)

// MessageAction is the body of POST /v1/messages/{action}.
type MessageAction struct {
	IDs []string `json:"ids"`
	NDR bool     `json:"ndr,omitempty"` // delete only: the sender gets a DSN
}

// QueueRetry is the (optional) body of POST /v1/queues/{name}/retry.
type QueueRetry struct {
	Resubmit bool `json:"resubmit,omitempty"`
}

// messageActions are the actions of POST /v1/messages/{action}.
var messageActions = map[string]bool{"hold": true, "release": true, "retry": true, "delete": true}

// messageStates are the values of the state filter.
var messageStates = map[string]bool{ops.StateQueued: true, ops.StateActive: true, ops.StateDeferred: true,
	ops.StateHeld: true, ops.StatePoisoned: true}

// maxBody bounds a request body (a list of ids).
const maxBody = 4 << 20

// queueRoutes registers the queue half of the API (served over ops.Queue).
func (s *Server) queueRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/queues", s.listQueues)
	mux.HandleFunc("POST /v1/queues/{name}/{action}", s.queueAction)
	mux.HandleFunc("GET /v1/messages", s.listMessages)
	mux.HandleFunc("GET /v1/messages/{id}", s.showMessage)
	mux.HandleFunc("GET /v1/messages/{id}/raw", s.exportMessage)
	mux.HandleFunc("POST /v1/messages/{action}", s.messageAction)
}

// statusOf is the HTTP status an ops error becomes.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ops.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ops.ErrConflict):
		return http.StatusConflict
	default:
		return http.StatusInternalServerError
	}
}

func (s *Server) listQueues(w http.ResponseWriter, r *http.Request) {
	qs, err := s.queue.Queues(r.Context())
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, qs)
}

func (s *Server) queueAction(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	var body QueueRetry
	if action == "retry" {
		if err := decodeBody(r, &body, true); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	res := ActionResult{ID: name, OK: true}
	var err error
	switch action {
	case "retry":
		res.Count, err = s.queue.RetryQueue(r.Context(), name, body.Resubmit)
		res.Message = fmt.Sprintf("%d messages due now", res.Count)
		if body.Resubmit {
			res.Message = fmt.Sprintf("%d messages resubmitted for routing", res.Count)
		}
	case "suspend":
		err = s.queue.SuspendQueue(r.Context(), name)
		res.Message = "suspended (runtime override; gone at restart)"
	case "resume":
		err = s.queue.ResumeQueue(r.Context(), name)
		res.Message = "resumed"
	default:
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown queue action %q (retry, suspend, resume)", action))
		return
	}
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	s.log.Warn("admin: queue "+action, "queue", name, "resubmit", body.Resubmit)
	writeJSON(w, http.StatusOK, res)
}

// ParseMessageFilter reads a listing's query (the inverse of
// MessageFilterQuery), with a precise error for a bad value.
func ParseMessageFilter(q url.Values) (ops.MessageFilter, error) {
	f := ops.MessageFilter{Queue: q.Get("queue"), From: q.Get("from"), To: q.Get("to"), State: q.Get("state"), After: q.Get("after")}
	if f.State != "" && !messageStates[f.State] {
		return f, fmt.Errorf("bad state %q: want queued, active, deferred, held or poisoned", f.State)
	}
	if v := q.Get("older_than"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return f, fmt.Errorf("bad older_than %q: want a duration such as 90s, 30m or 4h", v)
		}
		f.OlderThan = d
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, fmt.Errorf("bad limit %q: want a whole number, 0 for the default (%d)", v, ops.DefaultLimit)
		}
		f.Limit = n
	}
	if f.After != "" {
		if _, err := ops.ParsePosition(f.After); err != nil {
			return f, fmt.Errorf("bad after %q: want a queue id, or the next of the previous page (ID@ARRIVED)", f.After)
		}
	}
	return f, nil
}

// MessageFilterQuery is f as a listing's query.
func MessageFilterQuery(f ops.MessageFilter) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"queue": f.Queue, "from": f.From, "to": f.To, "state": f.State, "after": f.After} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.OlderThan > 0 {
		q.Set("older_than", f.OlderThan.String())
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request) {
	f, err := ParseMessageFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	l, err := s.queue.Messages(r.Context(), f)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) showMessage(w http.ResponseWriter, r *http.Request) {
	d, err := s.queue.Message(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) exportMessage(w http.ResponseWriter, r *http.Request) {
	rc, err := s.queue.OpenMessage(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "message/rfc822")
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Warn("admin: export cut short", "id", r.PathValue("id"), "err", err)
	}
}

func (s *Server) messageAction(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	if !messageActions[action] {
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown message action %q (hold, release, retry, delete)", action))
		return
	}
	var body MessageAction
	if err := decodeBody(r, &body, false); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	switch {
	case len(body.IDs) == 0:
		writeError(w, http.StatusBadRequest, errors.New(`no message ids: want {"ids":["..."]}`))
		return
	case body.NDR && action != "delete":
		writeError(w, http.StatusBadRequest, fmt.Errorf("ndr applies to delete only, not to %s", action))
		return
	}
	results := make([]ActionResult, 0, len(body.IDs))
	for _, id := range body.IDs {
		res := ActionResult{ID: id, OK: true}
		var err error
		switch action {
		case "hold":
			err, res.Message = s.queue.Hold(r.Context(), id), "held"
		case "release":
			err, res.Message = s.queue.Release(r.Context(), id), "released"
		case "retry":
			err, res.Message = s.queue.Retry(r.Context(), id), "due now"
		case "delete":
			err, res.Message = s.queue.Delete(r.Context(), id, body.NDR), "deleted"
			if body.NDR {
				res.Message = "deleted; the sender gets a DSN"
			}
		}
		if err != nil {
			res = ActionResult{ID: id, Error: err.Error()}
		}
		s.log.Warn("admin: message "+action, "id", id, "ndr", body.NDR, "ok", res.OK, "err", res.Error)
		results = append(results, res)
	}
	writeJSON(w, http.StatusOK, results)
}

// decodeBody decodes a JSON request body into v, refusing unknown fields;
// an empty body is allowed when optional.
func decodeBody(r *http.Request, v any, optional bool) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) && optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bad request body: %v", err)
	}
	return nil
}
