package admin_test

import (
	"github.com/ccproxy/ccproxy/internal/store/storetest"

	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/store"
)

const (
	testAdmin    = "root"
	testPassword = "correct horse battery staple"
)

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recorder is an Invalidator that remembers what it was told.
type recorder struct {
	mu   sync.Mutex
	invs []admin.Invalidation
}

func (r *recorder) Invalidate(_ context.Context, inv admin.Invalidation) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.invs = append(r.invs, inv)
	return nil
}

func (r *recorder) all() []admin.Invalidation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]admin.Invalidation(nil), r.invs...)
}

// env is one admin server on a fresh database, with every response
// validated against the OpenAPI document and every body kept so tests can
// check no secret was ever returned.
type env struct {
	t      testing.TB
	st     *store.Store
	sealer secrets.Sealer
	hasher *keys.Hasher
	srv    *httptest.Server
	logs   *syncBuffer
	inv    *recorder
	router routers.Router
	token  string
	// api is the server under test.
	api *admin.Server

	mu     sync.Mutex
	bodies bytes.Buffer
}

func newEnv(t testing.TB, configure ...func(*admin.Options)) *env {
	t.Helper()
	return newEnvAt(t, func(string) []func(*admin.Options) { return configure })
}

// newEnvAt is newEnv for options that need the server's own URL (a single
// sign-on redirect URL): configure gets it before the server starts.
func newEnvAt(t testing.TB, configureAt func(baseURL string) []func(*admin.Options)) *env {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	configure := configureAt("http://" + hs.Listener.Addr().String())
	ctx := context.Background()
	st := storetest.Open(t)
	mk := make([]byte, 32)
	_, _ = rand.Read(mk)
	sealer, err := secrets.NewLocal(mk)
	if err != nil {
		t.Fatal(err)
	}
	hasher, err := keys.NewHasher(bytes.Repeat([]byte("s"), keys.MinSecretLen))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	inv := &recorder{}
	opts := admin.Options{
		Store: st, Sealer: sealer, Hasher: hasher, Invalidator: inv,
		Logger:     slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: prometheus.NewRegistry(),
	}
	for _, c := range configure {
		c(&opts)
	}
	srv, err := admin.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if created, err := admin.EnsureFirstAdmin(ctx, st, testAdmin, testPassword); err != nil || !created {
		t.Fatalf("EnsureFirstAdmin = %v, %v; want true, nil", created, err)
	}
	hs.Config.Handler = srv.Handler()
	hs.Start()
	e := &env{t: t, st: st, sealer: sealer, hasher: hasher, logs: logs, inv: inv, srv: hs, api: srv}
	t.Cleanup(e.srv.Close)

	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(admin.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("OpenAPI document invalid: %v", err)
	}
	doc.Servers = nil
	if e.router, err = legacy.NewRouter(doc); err != nil {
		t.Fatal(err)
	}
	e.token = e.login(testAdmin, testPassword).Token
	return e
}

type loginResult struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	CSRFToken string    `json:"csrf_token"`
}

func (e *env) login(user, pass string) loginResult {
	e.t.Helper()
	resp := e.do(http.MethodPost, "/api/v1/auth/login", map[string]string{"username": user, "password": pass}, noAuth)
	if resp.status != http.StatusOK {
		e.t.Fatalf("login: status %d: %s", resp.status, resp.body)
	}
	var lr loginResult
	resp.decode(e.t, &lr)
	return lr
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// problem decodes a problem response, checking its media type.
func (r response) problem(t testing.TB) problemDoc {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json (body %s)", ct, r.body)
	}
	var p problemDoc
	r.decode(t, &p)
	if p.Status != r.status {
		t.Fatalf("problem status %d != HTTP status %d", p.Status, r.status)
	}
	return p
}

type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

func (p problemDoc) fields() []string {
	var out []string
	for _, e := range p.Errors {
		out = append(out, e.Field)
	}
	return out
}

// reqOption adjusts a request.
type reqOption func(*http.Request)

func noAuth(r *http.Request) { r.Header.Del("Authorization") }

func withHeader(k, v string) reqOption { return func(r *http.Request) { r.Header.Set(k, v) } }

func withCookie(c *http.Cookie) reqOption { return func(r *http.Request) { r.AddCookie(c) } }

// rawBody marks a body sent as is.
type rawBody string

// do sends a request (body: nil, rawBody, or a value to marshal) with the
// env's bearer token, validates the response against the OpenAPI document
// and returns it.
func (e *env) do(method, path string, body any, opts ...reqOption) response {
	e.t.Helper()
	return e.doWith(http.DefaultClient, method, path, body, opts...)
}

// doWith is do with another client (one dialing from another local
// address, say).
func (e *env) doWith(hc *http.Client, method, path string, body any, opts ...reqOption) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case rawBody:
		rd = strings.NewReader(string(b))
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	out := response{status: resp.StatusCode, header: resp.Header, body: b}
	e.mu.Lock()
	e.bodies.Write(b)
	e.mu.Unlock()
	e.validate(req, out)
	return out
}

// validate checks a response against the OpenAPI document; responses to
// paths the document does not have (the catch-all 404) are skipped.
func (e *env) validate(req *http.Request, resp response) {
	e.t.Helper()
	e.validateIn(e.t, req, resp)
}

// validateIn is validate reporting to t (a fuzz target's own t).
func (e *env) validateIn(t testing.TB, req *http.Request, resp response) {
	t.Helper()
	vreq := req.Clone(context.Background())
	vreq.URL.Scheme, vreq.URL.Host = "", ""
	route, params, err := e.router.FindRoute(vreq)
	if err != nil {
		if resp.status != http.StatusNotFound && resp.status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: no OpenAPI route but status %d", req.Method, req.URL.Path, resp.status)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route},
		Status:                 resp.status,
		Header:                 resp.header,
		Body:                   io.NopCloser(bytes.NewReader(resp.body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s → %d does not match the OpenAPI document: %v\nbody: %s", req.Method, req.URL.Path, resp.status, err, resp.body)
	}
}

// allBodies is everything the API has answered so far.
func (e *env) allBodies() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bodies.String()
}

// want fails unless resp has status.
func want(t testing.TB, resp response, status int) {
	t.Helper()
	if resp.status != status {
		t.Fatalf("status %d, want %d; body %s", resp.status, status, resp.body)
	}
}

// auditActions returns the actions of the audit entries for a target.
func (e *env) auditActions(targetID string) []string {
	e.t.Helper()
	es, _, err := e.st.Audit().List(context.Background(), store.AuditFilter{TargetID: targetID}, 100, "")
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for i := len(es) - 1; i >= 0; i-- {
		out = append(out, es[i].Action)
	}
	return out
}

func (e *env) createUser(name string) string {
	e.t.Helper()
	resp := e.do(http.MethodPost, "/api/v1/users", map[string]any{"name": name})
	want(e.t, resp, http.StatusCreated)
	var u struct {
		ID string `json:"id"`
	}
	resp.decode(e.t, &u)
	return u.ID
}

const randomID = "0b6f1f0e-8a4e-4d55-9c1a-3f2d8e6b7a10"
