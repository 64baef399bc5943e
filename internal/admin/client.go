package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Client speaks the admin API. Dial a Unix socket path, or an
// "http://host:port" URL with a bearer token.
type Client struct {
	addr  string // as given to NewClient, for error messages
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for addr: a Unix socket path, or an http://
// URL (token then goes in the Authorization header).
func NewClient(addr, token string) *Client {
	c := &Client{addr: addr, token: token}
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		c.base = strings.TrimRight(addr, "/")
		c.http = &http.Client{}
		return c
	}
	c.base = "http://hubd"
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		},
	}}
	return c
}

// APIError is a non-2xx reply.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// UnavailableError: hubd could not be reached at Addr (not running, wrong
// socket, no permission on it).
type UnavailableError struct {
	Addr string
	Err  error
}

func (e *UnavailableError) Error() string {
	return "cannot reach hubd's admin API at " + e.Addr + ": " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Do sends method path (with query) and body (JSON-encoded unless nil), and
// decodes a JSON reply into out (unless nil).
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	rc, err := c.Stream(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer rc.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, rc)
		return err
	}
	return json.NewDecoder(rc).Decode(out)
}

// Stream is Do returning the reply body unread (e.g. a raw message).
func (c *Client) Stream(ctx context.Context, method, path string, query url.Values, body any) (io.ReadCloser, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &UnavailableError{Addr: c.addr, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return nil, &APIError{Status: resp.StatusCode, Msg: e.Error}
	}
	return resp.Body, nil
}
