// Package fakebedrock is a scriptable stand-in for the AWS Bedrock runtime
// (InvokeModel, InvokeModelWithResponseStream and CountTokens for Anthropic
// models) used by the end-to-end tests. It serves HTTPS on a loopback port
// with a certificate for the real host names, issued by a throwaway CA whose
// PEM file the gateway gets as its upstream CA bundle; it checks the TLS SNI
// and Host the gateway sends, authenticates the request (Bedrock API key or
// SigV4, verified with aws-sdk-go-v2's signer) and validates the body as
// Bedrock does, records every request exactly as received, and answers with
// event-stream frames or JSON that the test scripts. Thinking blocks carry
// signatures shared with fakeanthropic (package thinking): a history whose
// thinking block has a missing or altered signature is refused with
// ValidationException, and a signature fakeanthropic made is accepted, as
// Bedrock accepts the Claude API's.
package fakebedrock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ccproxy/ccproxy/test/e2e/internal/thinking"
)

// AnthropicVersion is the anthropic_version Bedrock requires in the body.
const AnthropicVersion = "bedrock-2023-05-31"

// DefaultHost is the host name served when Config.Hosts is empty.
const DefaultHost = "bedrock-runtime.us-east-1.amazonaws.com"

// AllowedKeys are the top-level body keys Bedrock accepts for Anthropic
// models; any other key is answered with 400 "extraneous key [x] is not
// permitted".
var AllowedKeys = []string{"anthropic_version", "anthropic_beta", "messages", "system", "tools", "tool_choice",
	"metadata", "max_tokens", "thinking", "output_config", "stop_sequences", "temperature", "top_p", "top_k"}

// ClaudeCodeBetas are the anthropic_beta entries Claude Code 2.1.332 itself
// sends in its own Bedrock mode (testdata/claude-code-2.1.332/bedrock-mode-turn1).
var ClaudeCodeBetas = []string{"interleaved-thinking-2025-05-14", "tool-search-tool-2025-10-19", "thinking-token-count-2026-05-13"}

// Op is the Bedrock operation a request addresses.
type Op string

const (
	OpInvoke       Op = "invoke"
	OpInvokeStream Op = "invoke-with-response-stream"
	OpCountTokens  Op = "count-tokens"
)

// Auth modes recorded in AuthResult.Mode.
const (
	AuthNone   = "none"   // no Authorization header
	AuthBearer = "bearer" // Authorization: Bearer <key>
	AuthSigV4  = "sigv4"  // Authorization: AWS4-HMAC-SHA256 …
	AuthOther  = "other"  // anything else
)

// Config configures a fake. The zero value serves DefaultHost and accepts
// any credential (recording it) and no beta flag.
type Config struct {
	// Hosts are the DNS names in the certificate; SNI and Host must be one
	// of them. Default [DefaultHost].
	Hosts []string
	// CA issues the certificate; nil creates one (see Server.CA).
	CA *CA
	// Listen is the address to listen on; default "127.0.0.1:0".
	Listen string
	// APIKeys are the Bedrock API keys accepted as "Authorization: Bearer <key>".
	APIKeys []string
	// Credentials are the AWS credentials accepted for SigV4 (by access key
	// id; a SessionToken must then arrive as X-Amz-Security-Token).
	Credentials []aws.Credentials
	// When APIKeys and Credentials are both empty, any Authorization (even
	// none) is accepted and only recorded.

	// Betas is the set of anthropic_beta entries Bedrock knows; any other
	// entry is answered with 400 "invalid beta flag". nil means
	// ClaudeCodeBetas; an empty non-nil slice accepts none.
	Betas []string
	// NoCountTokens are (decoded) model ids whose count-tokens is answered
	// with ValidationException "The provided model doesn't support counting tokens.".
	NoCountTokens []string
	// Handler chooses replies when no scripted reply is queued; nil or a
	// zero Reply means Echo (or DefaultCountTokens for count-tokens).
	Handler Handler
	// AllowAnthropicHeaders accepts anthropic-* request headers, which
	// Claude Code's own Bedrock mode sends and Bedrock ignores; by default
	// they are a problem (a translated request must not carry them).
	AllowAnthropicHeaders bool
	// AllowProblems stops New from failing the test at cleanup when
	// Failures is non-empty (for tests that send bad requests on purpose).
	AllowProblems bool
	// Now is the clock for SigV4 expiry (±15 min); default time.Now.
	Now func() time.Time
}

// AuthResult is what authentication concluded for one request.
type AuthResult struct {
	// Mode is AuthNone, AuthBearer, AuthSigV4 or AuthOther.
	Mode string
	OK   bool
	// Key is the bearer key or the SigV4 access key id.
	Key string
	// Region and Service are the SigV4 credential scope's; Region is the
	// host's region for bearer keys.
	Region, Service string
	// SignedHeaders is the SigV4 SignedHeaders list as received.
	SignedHeaders []string
	// Error is the exception type answered on failure (e.g.
	// "InvalidSignatureException"), Detail says why.
	Error, Detail string
}

// Request is one request as the fake received it.
type Request struct {
	Method string
	// RawPath is the path exactly as received (escaped: "%3A" for ":").
	RawPath string
	// RawQuery is the query string as received, without "?".
	RawQuery string
	// Op is the operation the path names ("" when it names none).
	Op Op
	// ModelID is the decoded model id from the path.
	ModelID string
	// Host is the Host header (":authority" over h2); SNI the TLS server
	// name; Proto "HTTP/1.1" or "HTTP/2.0".
	Host, SNI, Proto string
	Header           http.Header
	Body             []byte
	// ContentLength is the received Content-Length header, -1 when absent.
	ContentLength int64
	// TransferEncoding is the received Transfer-Encoding (e.g. ["chunked"]).
	TransferEncoding []string
	Auth             AuthResult
	// Problems are the contract violations the fake found (see Failures).
	Problems []string
	// Status is the status the fake answered with (0 while in progress);
	// ErrorType the x-amzn-ErrorType type of an error answer.
	Status    int
	ErrorType string
	At        time.Time
}

// InvokeBody is the InvokeModel body: Body itself, or for count-tokens the
// base64-decoded input.invokeModel.body (nil when missing or malformed).
func (r Request) InvokeBody() []byte {
	if r.Op != OpCountTokens {
		return r.Body
	}
	var ct countTokensBody
	if json.Unmarshal(r.Body, &ct) != nil || ct.Input.InvokeModel == nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(ct.Input.InvokeModel.Body)
	if err != nil {
		return nil
	}
	return b
}

// JSON decodes InvokeBody into a generic map (nil when not JSON).
func (r Request) JSON() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.InvokeBody(), &m)
	return m
}

// Betas returns the body's anthropic_beta entries.
func (r Request) Betas() []string {
	var b struct {
		Beta []string `json:"anthropic_beta"`
	}
	_ = json.Unmarshal(r.InvokeBody(), &b)
	return b.Beta
}

func (r Request) String() string {
	return fmt.Sprintf("%s %s (%d bytes)", r.Method, r.RawPath, len(r.Body))
}

// Handler chooses the reply to a request that passed authentication and
// validation. Returning a zero Reply selects the default answer.
type Handler func(Request) Reply

// Server is the fake. Create it with New.
type Server struct {
	cfg   Config
	ca    *CA
	hosts []string
	ln    net.Listener
	srv   *http.Server
	port  int
	now   func() time.Time

	mu        sync.Mutex
	reqs      []*Request
	failures  []string
	handler   Handler
	queue     []Reply
	ctQueue   []Reply
	seq       int
	closed    bool
	serverLog []string
}

// logWriter keeps the http.Server's error log (TLS handshake errors, …).
type logWriter struct{ s *Server }

func (l logWriter) Write(p []byte) (int, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.s.serverLog = append(l.s.serverLog, strings.TrimSpace(string(p)))
	return len(p), nil
}

// ServerLog returns the http.Server's error log lines so far, e.g.
// "http: TLS handshake error from 127.0.0.1:…: remote error: tls: bad
// certificate" when a client does not trust the CA.
func (s *Server) ServerLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.serverLog)
}

// New starts a fake and closes it when the test ends. Unless
// cfg.AllowProblems is set, a cleanup fails the test for each entry of
// Failures.
func New(t testing.TB, cfg Config) *Server {
	t.Helper()
	s := &Server{cfg: cfg, handler: cfg.Handler, hosts: cfg.Hosts, ca: cfg.CA, now: cfg.Now}
	if len(s.hosts) == 0 {
		s.hosts = []string{DefaultHost}
	}
	if s.ca == nil {
		s.ca = NewCA(t)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.cfg.Betas == nil {
		s.cfg.Betas = ClaudeCodeBetas
	}
	leaf := s.ca.Leaf(t, s.hosts...)
	addr := cfg.Listen
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("fakebedrock: listen: %v", err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if !slices.Contains(s.hosts, hello.ServerName) {
				s.fail(fmt.Sprintf("TLS handshake from %s with SNI %q; want one of %q", hello.Conn.RemoteAddr(), hello.ServerName, s.hosts))
			}
			return &leaf, nil
		},
	}
	s.ln = tls.NewListener(ln, tlsCfg)
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), TLSConfig: tlsCfg, ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: log.New(logWriter{s}, "", 0)}
	// ServeTLS would wrap the listener again; Serve with a TLS listener
	// needs h2 configured explicitly.
	s.srv.Protocols = new(http.Protocols)
	s.srv.Protocols.SetHTTP1(true)
	s.srv.Protocols.SetHTTP2(true)
	go func() { _ = s.srv.Serve(s.ln) }()
	t.Cleanup(func() {
		if !cfg.AllowProblems {
			for _, f := range s.Failures() {
				t.Errorf("fakebedrock: %s", f)
			}
		}
		s.Close()
	})
	return s
}

// CA returns the CA that issued the certificate; CA().File is the PEM
// bundle to give the gateway.
func (s *Server) CA() *CA { return s.ca }

// CAFile is the path of the CA's PEM file.
func (s *Server) CAFile() string { return s.ca.File }

// Hosts returns the host names served.
func (s *Server) Hosts() []string { return slices.Clone(s.hosts) }

// Addr is the loopback address the server listens on ("127.0.0.1:port").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the listening port.
func (s *Server) Port() int { return s.port }

// URL returns "https://<host>:<port>" for one of the served host names
// (dial it at Addr).
func (s *Server) URL(host string) string { return fmt.Sprintf("https://%s:%d", host, s.port) }

// URLTemplate returns "https://bedrock-runtime.{region}.amazonaws.com:<port>",
// the form of the gateway's CCPROXY_BEDROCK_URL setting.
func (s *Server) URLTemplate() string {
	return fmt.Sprintf("https://bedrock-runtime.{region}.amazonaws.com:%d", s.port)
}

// Client returns an HTTP client trusting only the CA that dials every
// served host name (any port) to Addr, over h2 or HTTP/1.1.
func (s *Server) Client() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: s.ca.Pool()},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil || !slices.Contains(s.hosts, host) {
				return nil, fmt.Errorf("fakebedrock client: %s is not a served host", addr)
			}
			return d.DialContext(ctx, "tcp", s.Addr())
		},
	}
	return &http.Client{Transport: tr}
}

// HTTP1Client is Client restricted to HTTP/1.1 (as Envoy talks to Bedrock).
func (s *Server) HTTP1Client() *http.Client {
	c := s.Client()
	tr := c.Transport.(*http.Transport)
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return c
}

// SetHandler replaces the reply policy.
func (s *Server) SetHandler(h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Push queues replies for the next valid invoke / invoke-with-response-stream
// requests, in order; they take precedence over the handler.
func (s *Server) Push(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, replies...)
}

// PushCountTokens queues replies for the next valid count-tokens requests.
func (s *Server) PushCountTokens(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctQueue = append(s.ctQueue, replies...)
}

// Queued returns how many pushed replies are still unused (invoke, count-tokens).
func (s *Server) Queued() (invoke, countTokens int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue), len(s.ctQueue)
}

// Requests returns copies of all requests received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.reqs))
	for _, r := range s.reqs {
		out = append(out, r.clone())
	}
	return out
}

// RequestsTo returns the requests for the given operation.
func (s *Server) RequestsTo(op Op) []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

// Carrying returns the requests whose body (or, for count-tokens, decoded
// inner body) contains marker.
func (s *Server) Carrying(marker string) []Request {
	var out []Request
	for _, r := range s.Requests() {
		if bytes.Contains(r.Body, []byte(marker)) || bytes.Contains(r.InvokeBody(), []byte(marker)) {
			out = append(out, r)
		}
	}
	return out
}

// Failures returns every recorded contract violation: TLS handshakes with a
// wrong SNI, and each request's Problems prefixed by the request.
func (s *Server) Failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.failures)
	for _, r := range s.reqs {
		for _, p := range r.Problems {
			out = append(out, fmt.Sprintf("%s %s: %s", r.Method, r.RawPath, p))
		}
	}
	return out
}

// Close stops the server and drops open connections. Safe to call twice.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	_ = s.srv.Close()
}

func (s *Server) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, msg)
}

func (r *Request) clone() Request {
	c := *r
	c.Header = r.Header.Clone()
	c.Body = slices.Clone(r.Body)
	c.Problems = slices.Clone(r.Problems)
	c.TransferEncoding = slices.Clone(r.TransferEncoding)
	c.Auth.SignedHeaders = slices.Clone(r.Auth.SignedHeaders)
	return c
}

// region returns the region of a bedrock-runtime host name, else us-east-1.
func region(host string) string {
	parts := strings.Split(host, ".")
	if len(parts) >= 4 && strings.HasPrefix(parts[0], "bedrock-runtime") && parts[len(parts)-2] == "amazonaws" {
		return parts[1]
	}
	return "us-east-1"
}

// parsePath splits "/model/{escaped id}/{op}".
func parsePath(raw string) (Op, string, error) {
	rest, ok := strings.CutPrefix(raw, "/model/")
	if !ok {
		return "", "", errors.New("not under /model/")
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", "", errors.New("no operation")
	}
	op := Op(rest[i+1:])
	if op != OpInvoke && op != OpInvokeStream && op != OpCountTokens {
		return "", "", fmt.Errorf("unknown operation %q", op)
	}
	id, err := url.PathUnescape(rest[:i])
	if err != nil {
		return "", "", err
	}
	return op, id, nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	raw, rawQuery := r.RequestURI, ""
	if !strings.HasPrefix(raw, "/") {
		raw = r.URL.EscapedPath()
		rawQuery = r.URL.RawQuery
	} else if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw, rawQuery = raw[:i], raw[i+1:]
	}
	req := &Request{Method: r.Method, RawPath: raw, RawQuery: rawQuery, Host: r.Host, Proto: r.Proto,
		Header: r.Header.Clone(), Body: body, ContentLength: -1, TransferEncoding: slices.Clone(r.TransferEncoding), At: s.now()}
	if r.TLS != nil {
		req.SNI = r.TLS.ServerName
	}
	if v := r.Header.Values("Content-Length"); len(v) > 0 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil {
			req.ContentLength = n
		}
	} else if r.ContentLength >= 0 && len(r.TransferEncoding) == 0 && r.ProtoMajor == 1 {
		req.ContentLength = r.ContentLength
	}
	op, id, perr := parsePath(raw)
	req.Op, req.ModelID = op, id

	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()

	// The request is published (Requests, Carrying) only once handle has
	// filled it in: handle writes its fields without the lock.
	reply := s.handle(req, perr)
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	s.write(w, r, req, reply, seq)
}

func (s *Server) problem(req *Request, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req.Problems = append(req.Problems, fmt.Sprintf(format, args...))
}

// handle checks the request and decides the reply.
func (s *Server) handle(req *Request, perr error) Reply {
	// Transport-level checks: recorded, never answered.
	if !slices.Contains(s.hosts, req.SNI) {
		s.problem(req, "TLS SNI %q; want one of %q", req.SNI, s.hosts)
	}
	if !slices.Contains(s.hosts, req.Host) {
		s.problem(req, "Host %q; want one of %q (the host name, without port)", req.Host, s.hosts)
	} else if req.SNI != req.Host {
		s.problem(req, "Host %q differs from TLS SNI %q", req.Host, req.SNI)
	}
	if req.ContentLength < 0 {
		s.problem(req, "no content-length header (body of %d bytes)", len(req.Body))
	} else if req.ContentLength != int64(len(req.Body)) {
		s.problem(req, "content-length %d; the body has %d bytes", req.ContentLength, len(req.Body))
	}
	if len(req.TransferEncoding) > 0 {
		s.problem(req, "transfer-encoding %q", req.TransferEncoding)
	}
	var names []string
	for k := range req.Header {
		lk := strings.ToLower(k)
		if lk == "x-api-key" || strings.HasPrefix(lk, "x-ccproxy-") ||
			(strings.HasPrefix(lk, "anthropic-") && !s.cfg.AllowAnthropicHeaders) {
			names = append(names, lk)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		s.problem(req, "header %s must not reach Bedrock (%q)", n, req.Header.Values(n))
	}

	if req.Method != http.MethodPost || perr != nil {
		s.problem(req, "no such Bedrock operation: %s %s", req.Method, req.RawPath)
		return errorReply(http.StatusNotFound, "UnknownOperationException", "com.amazon.coral.service", "")
	}

	if rep, ok := s.authenticate(req); !ok {
		s.problem(req, "authentication: %s: %s", req.Auth.Error, req.Auth.Detail)
		return rep
	}

	invoke := req.Body
	if req.Op == OpCountTokens {
		b, rep, ok := s.countTokensInput(req)
		if !ok {
			return rep
		}
		invoke = b
		if p := profilePrefix(req.ModelID); p != "" {
			s.problem(req, "count-tokens for %q: an inference profile (%s.), not a base model id", req.ModelID, p)
			return Error(http.StatusBadRequest, "ValidationException", "The provided model identifier is invalid.")
		}
		if slices.Contains(s.cfg.NoCountTokens, req.ModelID) {
			return CountTokensUnsupported()
		}
	}
	if rep, ok := s.validate(req, invoke); !ok {
		return rep
	}

	s.mu.Lock()
	var rep Reply
	queued := false
	q := &s.queue
	if req.Op == OpCountTokens {
		q = &s.ctQueue
	}
	if len(*q) > 0 {
		rep, *q = (*q)[0], (*q)[1:]
		queued = true
	}
	h := s.handler
	s.mu.Unlock()
	if !queued && h != nil {
		rep = h(req.clone())
	}
	if isZero(rep) {
		if req.Op == OpCountTokens {
			return DefaultCountTokens(req.clone())
		}
		return Echo(req.clone())
	}
	return rep
}

func isZero(r Reply) bool {
	return r.Status == 0 && r.Header == nil && r.Events == nil && r.Exception == nil && r.Frames == nil && r.Body == nil && !r.Abort
}

type countTokensBody struct {
	Input struct {
		InvokeModel *struct {
			Body string `json:"body"`
		} `json:"invokeModel"`
	} `json:"input"`
}

func validation(msg string) Reply {
	return Error(http.StatusBadRequest, "ValidationException", msg)
}

// countTokensInput unwraps {"input":{"invokeModel":{"body":"<base64>"}}}.
func (s *Server) countTokensInput(req *Request) ([]byte, Reply, bool) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(req.Body, &outer); err != nil {
		s.problem(req, "count-tokens body is not a JSON object: %v", err)
		return nil, validation("Malformed input request, please reformat your input and try again."), false
	}
	for k := range outer {
		if k != "input" {
			s.problem(req, "count-tokens body has unknown key %q", k)
			return nil, Error(http.StatusBadRequest, "SerializationException", fmt.Sprintf("Unknown field: %s", k)), false
		}
	}
	var ct countTokensBody
	if err := json.Unmarshal(req.Body, &ct); err != nil || ct.Input.InvokeModel == nil {
		s.problem(req, "count-tokens body lacks input.invokeModel.body")
		return nil, validation("1 validation error detected: Value null at 'input' failed to satisfy constraint: Member must not be null"), false
	}
	b, err := base64.StdEncoding.DecodeString(ct.Input.InvokeModel.Body)
	if err != nil {
		s.problem(req, "count-tokens input.invokeModel.body is not base64: %v", err)
		return nil, Error(http.StatusBadRequest, "SerializationException", "Could not decode base64 body."), false
	}
	return b, Reply{}, true
}

// profilePrefix returns the inference-profile prefix of a model id ("us"
// for "us.anthropic.…"), or "".
func profilePrefix(id string) string {
	p, rest, ok := strings.Cut(id, ".")
	if !ok || !strings.HasPrefix(rest, "anthropic.") {
		return ""
	}
	switch p {
	case "us", "eu", "apac", "jp", "au", "ca", "us-gov", "global":
		return p
	}
	return ""
}

// validate applies Bedrock's checks to an InvokeModel body, including, for
// invoke and invoke-with-response-stream, the signatures of the thinking
// blocks in its history (thinking.CheckHistory): a bad one is answered with
// ValidationException "messages.N.content.M: Invalid `signature` in
// `thinking` block" and recorded as a problem.
func (s *Server) validate(req *Request, body []byte) (Reply, bool) {
	malformed := func(detail string) Reply {
		return validation("Malformed input request: " + detail + ", please reformat your input and try again.")
	}
	keys, err := topLevelKeys(body)
	if err != nil {
		s.problem(req, "body is not a JSON object: %v", err)
		return malformed("#: expected type: JSONObject"), false
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(body, &fields)
	for _, k := range []string{"model", "stream"} {
		if _, ok := fields[k]; ok {
			s.problem(req, "body has %q", k)
		}
	}
	var extra []string
	for _, k := range keys {
		if !slices.Contains(AllowedKeys, k) {
			extra = append(extra, k)
			if k != "model" && k != "stream" {
				s.problem(req, "body has extraneous key %q", k)
			}
		}
	}
	if len(extra) == 1 {
		return malformed("#: extraneous key [" + extra[0] + "] is not permitted"), false
	}
	if len(extra) > 1 {
		return malformed(fmt.Sprintf("#: %d schema violations found", len(extra))), false
	}
	var v struct {
		Version *string  `json:"anthropic_version"`
		Beta    []string `json:"anthropic_beta"`
		Max     *int     `json:"max_tokens"`
		Msgs    *[]any   `json:"messages"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		s.problem(req, "body fields have the wrong types: %v", err)
		return malformed("#: " + err.Error()), false
	}
	if v.Version == nil {
		s.problem(req, "body has no anthropic_version")
		return malformed("#: required key [anthropic_version] not found"), false
	}
	if *v.Version != AnthropicVersion {
		s.problem(req, "anthropic_version %q; want %q", *v.Version, AnthropicVersion)
		return validation("Invalid API version"), false
	}
	if v.Max == nil && req.Op != OpCountTokens {
		s.problem(req, "body has no max_tokens")
		return malformed("#: required key [max_tokens] not found"), false
	}
	if v.Msgs == nil {
		s.problem(req, "body has no messages")
		return malformed("#: required key [messages] not found"), false
	}
	if k := cacheControlExtra(body); k != "" {
		s.problem(req, "a cache_control object has extraneous key %q", k)
		return malformed("#: extraneous key [" + k + "] is not permitted"), false
	}
	for _, b := range v.Beta {
		if !slices.Contains(s.cfg.Betas, b) {
			s.problem(req, "anthropic_beta %q is not a flag Bedrock knows (allowed: %q)", b, s.cfg.Betas)
			return validation("invalid beta flag"), false
		}
	}
	if req.Op != OpCountTokens {
		if err := thinking.CheckHistory(body); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				s.problem(req, "%s", line)
			}
			var be *thinking.BlockError
			errors.As(err, &be)
			return validation(be.Error()), false
		}
	}
	return Reply{}, true
}

// topLevelKeys returns the keys of a JSON object in order.
func topLevelKeys(b []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data")
	}
	return keys, nil
}

// authenticate checks the Authorization header; on failure it returns the
// error reply AWS would send.
func (s *Server) authenticate(req *Request) (Reply, bool) {
	a := &req.Auth
	authz := req.Header.Values("Authorization")
	check := len(s.cfg.APIKeys) > 0 || len(s.cfg.Credentials) > 0
	unrecognized := func(detail string) (Reply, bool) {
		a.Error, a.Detail = "UnrecognizedClientException", detail
		if !check {
			a.OK = true
			return Reply{}, true
		}
		return errorReply(http.StatusForbidden, a.Error, "com.amazon.coral.service", "The security token included in the request is invalid."), false
	}
	switch {
	case len(authz) == 0:
		a.Mode = AuthNone
		a.Error, a.Detail = "MissingAuthenticationTokenException", "no Authorization header"
		if !check {
			a.OK, a.Error = true, ""
			return Reply{}, true
		}
		return errorReply(http.StatusForbidden, a.Error, "com.amazon.coral.service", "Missing Authentication Token"), false
	case len(authz) > 1:
		a.Mode = AuthOther
		return unrecognized(fmt.Sprintf("%d Authorization headers", len(authz)))
	case strings.HasPrefix(authz[0], "Bearer "):
		a.Mode, a.Key, a.Region = AuthBearer, strings.TrimPrefix(authz[0], "Bearer "), region(req.Host)
		for _, k := range s.cfg.APIKeys {
			if subtle.ConstantTimeCompare([]byte(k), []byte(a.Key)) == 1 {
				a.OK = true
				return Reply{}, true
			}
		}
		return unrecognized("unknown API key")
	case strings.HasPrefix(authz[0], "AWS4-HMAC-SHA256 "):
		a.Mode = AuthSigV4
		rep, ok := s.verifySigV4(req, authz[0])
		if !ok && !check {
			a.OK = true
			return Reply{}, true
		}
		a.OK = ok
		if ok {
			a.Error, a.Detail = "", ""
		}
		return rep, ok
	default:
		a.Mode = AuthOther
		return unrecognized("unsupported Authorization scheme")
	}
}

const signatureMismatch = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."

const amzDateFormat = "20060102T150405Z"

// verifySigV4 recomputes the signature with aws-sdk-go-v2's v4.Signer over
// what was received: the method, the Host header, the escaped path exactly
// as received (which the signer escapes once more, as AWS does for every
// service but S3: "%3A" is canonicalised as "%253A"), the query, the headers
// named in SignedHeaders, X-Amz-Date, and the SHA-256 of the received body.
func (s *Server) verifySigV4(req *Request, authz string) (Reply, bool) {
	a := &req.Auth
	invalidSig := func(detail, msg string) (Reply, bool) {
		a.Error, a.Detail = "InvalidSignatureException", detail
		return errorReply(http.StatusForbidden, a.Error, "com.amazon.coral.service", msg), false
	}
	incomplete := func(detail string) (Reply, bool) {
		a.Error, a.Detail = "IncompleteSignatureException", detail
		return errorReply(http.StatusBadRequest, a.Error, "com.amazon.coral.service", detail), false
	}
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(authz, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	cred, signed, sig := fields["Credential"], fields["SignedHeaders"], fields["Signature"]
	if cred == "" || signed == "" || sig == "" {
		return incomplete("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters")
	}
	a.SignedHeaders = strings.Split(signed, ";")
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return incomplete("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '" + cred + "'")
	}
	a.Key, a.Region, a.Service = scope[0], scope[2], scope[3]
	var creds *aws.Credentials
	for i := range s.cfg.Credentials {
		if s.cfg.Credentials[i].AccessKeyID == a.Key {
			creds = &s.cfg.Credentials[i]
		}
	}
	if creds == nil {
		a.Error, a.Detail = "UnrecognizedClientException", "unknown access key id "+a.Key
		return errorReply(http.StatusForbidden, a.Error, "com.amazon.coral.service", "The security token included in the request is invalid."), false
	}
	if tok := req.Header.Get("X-Amz-Security-Token"); tok != creds.SessionToken {
		a.Error, a.Detail = "UnrecognizedClientException", "X-Amz-Security-Token does not match the credentials' session token"
		return errorReply(http.StatusForbidden, a.Error, "com.amazon.coral.service", "The security token included in the request is invalid."), false
	}
	amzDate := req.Header.Get("X-Amz-Date")
	when, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}
	if scope[1] != amzDate[:8] {
		return invalidSig("credential scope date "+scope[1]+" differs from X-Amz-Date "+amzDate,
			"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '"+scope[1]+"' != '"+amzDate[:8]+"', from '"+amzDate+"'.")
	}
	if want := region(req.Host); a.Region != want {
		return invalidSig("credential scope region "+a.Region+"; the host's is "+want,
			"Credential should be scoped to a valid region. ")
	}
	if a.Service != "bedrock" {
		return invalidSig("credential scope service "+a.Service+"; want bedrock",
			"Credential should be scoped to correct service: 'bedrock'. ")
	}
	now := s.now().UTC()
	if when.Before(now.Add(-15 * time.Minute)) {
		return invalidSig("signature expired", fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - 15 min.)",
			amzDate, now.Add(-15*time.Minute).Format(amzDateFormat), now.Format(amzDateFormat)))
	}
	if when.After(now.Add(15 * time.Minute)) {
		return invalidSig("signature not yet current", fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + 15 min.)",
			amzDate, now.Add(15*time.Minute).Format(amzDateFormat), now.Format(amzDateFormat)))
	}

	// Rebuild the request from what was received, with only the headers the
	// client signed, and let the SDK's signer sign it.
	u := &url.URL{Scheme: "https", Host: req.Host, Opaque: "//" + req.Host + req.RawPath, RawQuery: req.RawQuery}
	sr := &http.Request{Method: req.Method, URL: u, Host: req.Host, Header: http.Header{}}
	for _, h := range a.SignedHeaders {
		switch h {
		case "host":
		case "content-length":
			sr.ContentLength = req.ContentLength
		default:
			sr.Header[http.CanonicalHeaderKey(h)] = req.Header.Values(h)
		}
	}
	sum := sha256.Sum256(req.Body)
	if err := v4.NewSigner().SignHTTP(context.Background(), *creds, sr, hex.EncodeToString(sum[:]), a.Service, a.Region, when); err != nil {
		return invalidSig("signer: "+err.Error(), signatureMismatch)
	}
	want := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(sr.Header.Get("Authorization"), "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		want[k] = v
	}
	if want["SignedHeaders"] != signed {
		return invalidSig(fmt.Sprintf("SignedHeaders %q; v4.Signer signs %q for these headers (host and x-amz-date must be signed; user-agent, expect, transfer-encoding, x-amzn-trace-id cannot be checked)", signed, want["SignedHeaders"]), signatureMismatch)
	}
	if want["Signature"] != sig {
		return invalidSig("signature mismatch over "+canonicalHint(req), signatureMismatch)
	}
	return Reply{}, true
}

// canonicalHint describes the canonical path and body hash used.
func canonicalHint(req *Request) string {
	sum := sha256.Sum256(req.Body)
	return fmt.Sprintf("path %q (canonical: escaped once more), body sha256 %x", req.RawPath, sum[:])
}

func requestID(seq int) string {
	return fmt.Sprintf("fa4eb3d0-0000-4000-8000-%012d", seq)
}

// write sends reply for req.
func (s *Server) write(w http.ResponseWriter, r *http.Request, req *Request, reply Reply, seq int) {
	status := reply.Status
	if status == 0 {
		status = http.StatusOK
	}
	for k, v := range reply.Header {
		w.Header()[k] = slices.Clone(v)
	}
	w.Header().Set("X-Amzn-Requestid", requestID(seq))
	errType := ""
	if status >= 300 {
		errType, _, _ = strings.Cut(w.Header().Get("X-Amzn-Errortype"), ":")
	}
	s.mu.Lock()
	req.Status, req.ErrorType = status, errType
	s.mu.Unlock()

	streaming := req.Op == OpInvokeStream && status < 300 &&
		(reply.Events != nil || reply.Exception != nil || reply.Frames != nil)
	if !streaming {
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(reply.Body)))
		w.WriteHeader(status)
		_, _ = w.Write(reply.Body)
		if reply.Abort {
			panic(http.ErrAbortHandler)
		}
		return
	}
	frames, err := reply.frames()
	if err != nil {
		s.problem(req, "scripted reply: %v", err)
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	w.Header().Set("X-Amzn-Bedrock-Content-Type", "application/json")
	w.WriteHeader(status)
	rc := http.NewResponseController(w)
	enc := eventstream.NewEncoder()
	var buf bytes.Buffer
	for _, f := range frames {
		if reply.Gap > 0 {
			select {
			case <-time.After(reply.Gap):
			case <-r.Context().Done():
				return
			}
		}
		buf.Reset()
		if err := enc.Encode(&buf, f); err != nil {
			s.problem(req, "scripted reply: encode frame: %v", err)
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return
		}
		_ = rc.Flush()
	}
	if reply.Abort {
		panic(http.ErrAbortHandler)
	}
}

// CacheControlKeys are the members Bedrock accepts in a cache_control
// object.
var CacheControlKeys = []string{"type", "ttl"}

// cacheControlExtra returns a member of a cache_control object of a block
// of system, tools or a message's content (or a block's own content) that
// is not in CacheControlKeys, "" when there is none.
func cacheControlExtra(body []byte) string {
	type block struct {
		CacheControl map[string]json.RawMessage `json:"cache_control"`
		Content      json.RawMessage            `json:"content"`
	}
	var blocks func(raw json.RawMessage) string
	blocks = func(raw json.RawMessage) string {
		var bs []json.RawMessage
		if json.Unmarshal(raw, &bs) != nil {
			return ""
		}
		for _, r := range bs {
			var b block
			if json.Unmarshal(r, &b) != nil {
				continue
			}
			for k := range b.CacheControl {
				if !slices.Contains(CacheControlKeys, k) {
					return k
				}
			}
			if k := blocks(b.Content); k != "" {
				return k
			}
		}
		return ""
	}
	var v struct {
		System   json.RawMessage `json:"system"`
		Tools    json.RawMessage `json:"tools"`
		Messages []struct {
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	if k := blocks(v.System); k != "" {
		return k
	}
	if k := blocks(v.Tools); k != "" {
		return k
	}
	for _, m := range v.Messages {
		if k := blocks(m.Content); k != "" {
			return k
		}
	}
	return ""
}
