package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// maxResponseBytes caps what the CLI reads from the server.
const maxResponseBytes = 16 << 20

// FieldError is one invalid field named by a validation problem.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// APIError is an error answer of the admin API, decoded from its RFC 9457
// application/problem+json body when it has one.
type APIError struct {
	Status int
	Title  string
	Detail string
	Errors []FieldError
}

// Error formats the problem as "title: detail", followed by one indented
// line per field error.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Title)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	for _, f := range e.Errors {
		fmt.Fprintf(&b, "\n  %s: %s", f.Field, f.Message)
	}
	return b.String()
}

// client calls the admin API with one session token.
type client struct {
	base  string // scheme://host[:port][/prefix], no trailing slash
	token string
	hc    *http.Client
}

// do sends the request and returns the response body of a 2xx answer, or
// an *APIError.
func (c *client) do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
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
	req.Header.Set("Accept", "application/json, application/problem+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL holds no secret, but *url.Error repeats it verbatim; that
		// is what the user needs to see.
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the response: %w", method, path, err)
	}
	if len(raw) > maxResponseBytes {
		return nil, fmt.Errorf("%s %s: response larger than %d bytes", method, path, maxResponseBytes)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return raw, nil
	}
	return nil, problemError(resp, raw)
}

// problemError decodes an error answer; a body that is not a problem
// document (a proxy's HTML page, say) is not echoed.
func problemError(resp *http.Response, raw []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, Title: strings.ToLower(http.StatusText(resp.StatusCode))}
	if e.Title == "" {
		e.Title = fmt.Sprintf("HTTP status %d", resp.StatusCode)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/problem+json" {
		return e
	}
	var p struct {
		Title  string       `json:"title"`
		Detail string       `json:"detail"`
		Errors []FieldError `json:"errors"`
	}
	if json.Unmarshal(raw, &p) != nil {
		return e
	}
	if p.Title != "" {
		e.Title = p.Title
	}
	e.Detail, e.Errors = p.Detail, p.Errors
	return e
}

// decode unmarshals a response body.
func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("the server sent an unexpected response: %w", err)
	}
	return nil
}

// isStatus reports whether err is an API error with the given status.
func isStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

// normalizeServer checks a server URL and strips its trailing slash.
func normalizeServer(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("server %q must be an http:// or https:// URL without credentials, query or fragment", s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// pathID escapes an ID from the command line for use in a URL path, so an
// argument cannot reach another endpoint.
func pathID(id string) string { return url.PathEscape(id) }
