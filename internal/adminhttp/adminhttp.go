// Package adminhttp is the one JSON client for the controller's and the
// router's admin APIs, shared by the CLIs, the demo and the test harness:
// one request, a bounded read of the answer, 2xx decoded into the caller's
// value, anything else an *Error carrying the status and the server's
// message.
package adminhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxAnswer bounds how much of an answer is read (entity listings of a
// large model are the biggest).
const MaxAnswer = 64 << 20

// Request is one admin API call.
type Request struct {
	Method string
	// URL is absolute: "http://HOST:PORT/v1/status".
	URL string
	// ContentType is set when Body is not nil; default application/json.
	ContentType string
	Body        []byte
	// Token, when set, is sent as a bearer token (mutating endpoints).
	Token string
}

// Error is an answer outside 2xx.
type Error struct {
	Status int
	// Message is the server's {"error": ...} text, or the trimmed body.
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

// Do sends r with c (http.DefaultClient when nil) and decodes a 2xx JSON
// answer into out (ignored when nil).
func Do(ctx context.Context, c *http.Client, r Request, out any) error {
	if c == nil {
		c = http.DefaultClient
	}
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return err
	}
	if r.Body != nil {
		ct := r.ContentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &Error{Status: resp.StatusCode, Message: msg}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", r.Method, r.URL, err)
	}
	return nil
}
