package admin

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"hubd/hub/tracking"
)

// Typed helpers for the daemon half of the API (daemon_handlers.go).

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.Do(ctx, http.MethodGet, "/v1/status", nil, nil, &st)
	return st, err
}

// Cluster is GET /v1/cluster.
func (c *Client) Cluster(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	err := c.Do(ctx, http.MethodGet, "/v1/cluster", nil, nil, &st)
	return st, err
}

// Connectors is GET /v1/connectors.
func (c *Client) Connectors(ctx context.Context) ([]ConnectorInfo, error) {
	var list []ConnectorInfo
	err := c.Do(ctx, http.MethodGet, "/v1/connectors", nil, nil, &list)
	return list, err
}

// StopConnector is POST /v1/connectors/{name}/stop.
func (c *Client) StopConnector(ctx context.Context, name string) (ActionResult, error) {
	return c.connectorAction(ctx, name, "stop")
}

// StartConnector is POST /v1/connectors/{name}/start.
func (c *Client) StartConnector(ctx context.Context, name string) (ActionResult, error) {
	return c.connectorAction(ctx, name, "start")
}

func (c *Client) connectorAction(ctx context.Context, name, action string) (ActionResult, error) {
	var res ActionResult
	err := c.Do(ctx, http.MethodPost, "/v1/connectors/"+url.PathEscape(name)+"/"+action, nil, nil, &res)
	return res, err
}

// Routes is GET /v1/routes; size "" routes for any size.
func (c *Client) Routes(ctx context.Context, addresses []string, size string) (RoutesReport, error) {
	q := url.Values{}
	for _, a := range addresses {
		q.Add("address", a)
	}
	if size != "" {
		q.Set("size", size)
	}
	var rep RoutesReport
	err := c.Do(ctx, http.MethodGet, "/v1/routes", q, nil, &rep)
	return rep, err
}

// TrackQuery is GET /v1/track's filter; Since is a duration back ("2h")
// or an RFC 3339 time.
type TrackQuery struct {
	MessageID, QueueID, Sender, Recipient, Since string
	Limit                                        int
}

// Track is GET /v1/track.
func (c *Client) Track(ctx context.Context, tq TrackQuery) ([]tracking.Event, error) {
	q := url.Values{}
	for k, v := range map[string]string{"message_id": tq.MessageID, "queue_id": tq.QueueID,
		"sender": tq.Sender, "recipient": tq.Recipient, "since": tq.Since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if tq.Limit > 0 {
		q.Set("limit", strconv.Itoa(tq.Limit))
	}
	var events []tracking.Event
	err := c.Do(ctx, http.MethodGet, "/v1/track", q, nil, &events)
	return events, err
}

// Reload is POST /v1/reload.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	err := c.Do(ctx, http.MethodPost, "/v1/reload", nil, nil, &res)
	return res, err
}
