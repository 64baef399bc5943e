package admin

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"hubd/hub/ops"
)

// Typed helpers for the queue half of the API.

// Queues lists the queues (GET /v1/queues).
func (c *Client) Queues(ctx context.Context) ([]ops.QueueInfo, error) {
	var out []ops.QueueInfo
	err := c.Do(ctx, http.MethodGet, "/v1/queues", nil, nil, &out)
	return out, err
}

// QueueAction runs retry (with resubmit), suspend or resume on a queue.
func (c *Client) QueueAction(ctx context.Context, name, action string, resubmit bool) (ActionResult, error) {
	var body any
	if action == "retry" {
		body = QueueRetry{Resubmit: resubmit}
	}
	var out ActionResult
	err := c.Do(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(name)+"/"+action, nil, body, &out)
	return out, err
}

// Messages lists messages (GET /v1/messages).
func (c *Client) Messages(ctx context.Context, f ops.MessageFilter) (ops.MessageList, error) {
	var out ops.MessageList
	err := c.Do(ctx, http.MethodGet, "/v1/messages", MessageFilterQuery(f), nil, &out)
	return out, err
}

// Message shows one message (GET /v1/messages/{id}).
func (c *Client) Message(ctx context.Context, id string) (ops.MessageDetail, error) {
	var out ops.MessageDetail
	err := c.Do(ctx, http.MethodGet, "/v1/messages/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// OpenMessage returns the message as queued (GET /v1/messages/{id}/raw).
func (c *Client) OpenMessage(ctx context.Context, id string) (io.ReadCloser, error) {
	return c.Stream(ctx, http.MethodGet, "/v1/messages/"+url.PathEscape(id)+"/raw", nil, nil)
}

// MessageAction runs hold, release, retry or delete on ids; one result
// per id, in order.
func (c *Client) MessageAction(ctx context.Context, action string, ids []string, ndr bool) ([]ActionResult, error) {
	var out []ActionResult
	err := c.Do(ctx, http.MethodPost, "/v1/messages/"+url.PathEscape(action), nil, MessageAction{IDs: ids, NDR: ndr}, &out)
	return out, err
}
