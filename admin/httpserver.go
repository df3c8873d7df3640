package admin

import (
	"log/slog"
	"net/http"
	"time"
)

// HTTPLimits bound what one client can hold of the admin HTTP server: a
// connection that never finishes its headers (slowloris), a body sent byte
// by byte, a reader that never drains the answer, an idle keep-alive, huge
// headers. Zero fields take the defaults of DefaultHTTPLimits.
type HTTPLimits struct {
	// ReadHeaderTimeout is the time to send the request line and headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout is the time to send the whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout is the time to answer, from the end of the request
	// headers. A handler that streams for longer (an export, server-sent
	// events) must extend its own deadline with
	// http.ResponseController.SetWriteDeadline.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps the request line and headers; larger requests get
	// 431.
	MaxHeaderBytes int
}

// DefaultHTTPLimits returns the limits used for zero HTTPLimits fields:
// every request of the API is small (bodies are capped at 64 KiB) and every
// answer is a page of at most a thousand items.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// HTTPServer returns an http.Server serving the API with limits l. The
// caller sets Addr or calls Serve with its listener.
func (s *Server) HTTPServer(l HTTPLimits) *http.Server {
	d := DefaultHTTPLimits()
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// The server's own complaints (TLS handshakes, panics) go to the
		// service's log rather than to stderr.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}
