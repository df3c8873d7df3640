// Package extproc owns ccproxy's Envoy external processing (ext_proc) gRPC
// server: the service Envoy's ext_proc filters call for every request. It
// wires the router-level processor (package extproc/router), key resolution
// (extproc/accesskey) and usage metering (extproc/metering) behind
// envoy.service.ext_proc.v3.ExternalProcessor, with the gRPC health service
// beside it, and listens on a Unix socket (the sidecar deployment) or TCP.
package extproc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ccproxy/ccproxy/extproc/accesskey"
	"github.com/ccproxy/ccproxy/extproc/bedrockauth"
	"github.com/ccproxy/ccproxy/extproc/handoff"
	"github.com/ccproxy/ccproxy/extproc/internal/bufpool"
	"github.com/ccproxy/ccproxy/extproc/planbreaker"
	"github.com/ccproxy/ccproxy/extproc/router"
	"github.com/ccproxy/ccproxy/extproc/runtimeconfig"
	"github.com/ccproxy/ccproxy/extproc/upstream"
	"github.com/ccproxy/ccproxy/internal/dataplane"
	"github.com/ccproxy/ccproxy/internal/usage"
)

// MaxMessageSize is the gRPC message limit in both directions. Request
// bodies reach 32 MB and arrive in one BUFFERED message; the default 4 MiB
// would fail them.
const MaxMessageSize = 64 << 20

// DefaultDrainTimeout is how long Serve lets open streams finish after its
// context is cancelled.
const DefaultDrainTimeout = 30 * time.Second

// Options configures a Server.
type Options struct {
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Keys resolves access keys. Required.
	Keys accesskey.Resolver
	// Usage receives one event per request that reached an upstream.
	// Required.
	Usage usage.Sink
	// Registerer receives the server's metrics; nil keeps them in a private
	// registry.
	Registerer prometheus.Registerer
	// Models is the GET /v1/models answer.
	Models []router.Model
	// ModelsFunc, when set, supplies the GET /v1/models answer per request
	// instead of Models (cmd/ccproxy builds it from the runtime
	// configuration the control plane sends).
	ModelsFunc func() []router.Model
	// Now is the clock for usage timings; nil means time.Now.
	Now func() time.Time
	// DrainTimeout bounds the graceful stop; zero means
	// DefaultDrainTimeout. Streamed answers can last minutes, so after it
	// the remaining streams are cut.
	DrainTimeout time.Duration
	// Bedrock enables Bedrock routes; nil refuses Bedrock-bound requests
	// with a clear error.
	Bedrock *BedrockOptions
	// Limits bound each access key's concurrent requests and request body
	// size (router.Limits); the zero value sets none.
	Limits router.Limits
	// SkipPlanRequestBodies is router.Config.SkipPlanRequestBodies.
	SkipPlanRequestBodies bool
	// RateLimits enforces per-minute rate limits (ratelimit.Limiter); nil
	// enforces none.
	RateLimits router.RateLimiter
	// TLS, when set, serves gRPC over TLS with it: for a TCP listener it
	// should require client certificates (tlsfiles.ServerConfig), since a
	// client of this server is handed decrypted Bedrock credentials. nil
	// serves plaintext (a Unix socket, loopback).
	TLS *tls.Config
	// Tracer, when set, traces every request: a span per request in the
	// router-level processor and one per upstream attempt (router.Config,
	// upstream.Config). nil, the default, traces nothing.
	Tracer trace.Tracer
	// SelfService answers GET /ak/<key>/me (the admin's KeyService
	// client); nil answers it 503.
	SelfService router.SelfService
}

// BedrockOptions is what serving Bedrock needs.
type BedrockOptions struct {
	// Runtime supplies the control plane's runtime configuration.
	Runtime runtimeconfig.Source
	// Signer checks and applies Bedrock credentials.
	Signer *bedrockauth.Signer
	// Budgets checks monthly Bedrock budgets (budget.Checker); nil checks
	// none.
	Budgets router.BudgetChecker
	// Breaker is the per-access-key Plan circuit breaker of plan_first
	// requests; nil means always closed (fallback still happens, Envoy
	// retrying each refused request on Bedrock).
	Breaker *planbreaker.Breaker
	// PreemptThreshold is the default pre-emptive failover threshold, a
	// Plan utilization fraction in [0, 1] (0 = off), for users without one
	// of their own; it acts only through Breaker.
	PreemptThreshold float64
}

// Server is the ext_proc gRPC service.
type Server struct {
	log      *slog.Logger
	router   *router.Router
	upstream *upstream.Handler // nil without Bedrock
	drain    time.Duration
	pool     *bufpool.Pool
	tls      *tls.Config
}

// NewServer returns a Server for opts.
func NewServer(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	m, err := router.NewMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("extproc: %w", err)
	}
	rcfg := router.Config{
		Keys:       opts.Keys,
		Usage:      opts.Usage,
		Models:     opts.Models,
		ModelsFunc: opts.ModelsFunc,
		Logger:     opts.Logger,
		Metrics:    m,
		Now:        opts.Now,
		Limits:     opts.Limits,

		SkipPlanRequestBodies: opts.SkipPlanRequestBodies,
		Tracer:                opts.Tracer,
		RateLimits:            opts.RateLimits,
		// SelfService: the developer's own status (router/me.go).
		SelfService: opts.SelfService,
	}
	var up *upstream.Handler
	if b := opts.Bedrock; b != nil {
		if b.Runtime == nil || b.Signer == nil {
			return nil, errors.New("extproc: BedrockOptions needs Runtime and Signer")
		}
		requests := handoff.NewStore()
		rcfg.Bedrock = &router.BedrockConfig{Runtime: b.Runtime, Credentials: b.Signer, Requests: requests, Budgets: b.Budgets,
			PreemptThreshold: b.PreemptThreshold}
		ucfg := upstream.Config{Requests: requests, Signer: b.Signer, Logger: opts.Logger, Registerer: opts.Registerer, Tracer: opts.Tracer}
		if b.Breaker != nil {
			rcfg.Bedrock.Breaker, ucfg.Breaker = b.Breaker, b.Breaker
		}
		up, err = upstream.New(ucfg)
		if err != nil {
			return nil, fmt.Errorf("extproc: %w", err)
		}
	}
	rt, err := router.New(rcfg)
	if err != nil {
		return nil, fmt.Errorf("extproc: %w", err)
	}
	// gRPC's default pool serves every message between 32 KiB and 1 MiB
	// from 1 MiB buffers and zeroes the whole buffer on each Get: for the
	// ~50 KB Claude Code bodies that was the largest single CPU cost of a
	// request. Power-of-two tiers up to MaxMessageSize, handed out without
	// zeroing (see bufpool), cost neither.
	pool := bufpool.New(8, 26)
	return &Server{log: opts.Logger, router: rt, upstream: up, drain: opts.DrainTimeout, pool: pool, tls: opts.TLS}, nil
}

// Serve answers ext_proc streams on lis until ctx is cancelled, then stops
// gracefully: health turns NOT_SERVING, new streams are refused, open ones
// get DrainTimeout to finish. It closes lis. It returns nil after a
// cancellation and the listener's error otherwise.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	var creds []grpc.ServerOption
	if s.tls != nil {
		creds = append(creds, grpc.Creds(credentials.NewTLS(s.tls)))
	}
	gs := grpc.NewServer(append(creds,
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		experimental.BufferPool(s.pool),
		// The codec assembles and marshals messages; without its own, a
		// 48 KB body took a zeroed 1 MiB buffer (see bufpool.Codec).
		grpc.ForceServerCodecV2(bufpool.NewCodec(s.pool)),
		// Envoy is the only client, over a local socket, and sends ~50 KB
		// request bodies (up to 32 MB): large flow-control windows let a
		// body arrive without waiting for WINDOW_UPDATEs, and a larger read
		// buffer takes it in fewer read(2) calls.
		grpc.InitialWindowSize(4<<20),
		grpc.InitialConnWindowSize(16<<20),
		grpc.ReadBufferSize(256<<10),
		grpc.StatsHandler(peerTagger{}),
	)...)
	extprocv3.RegisterExternalProcessorServer(gs, s)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus(extprocv3.ExternalProcessor_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	s.log.Info("extproc serving", slog.String("addr", lis.Addr().String()), slog.Bool("mtls", s.tls != nil))
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(peerListener{lis}) }()
	select {
	case err := <-errc:
		return fmt.Errorf("extproc: serve: %w", err)
	case <-ctx.Done():
	}
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(s.drain)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.log.Warn("extproc drain timeout; closing open streams")
		gs.Stop()
		<-stopped
	}
	<-errc
	s.log.Info("extproc stopped")
	return nil
}

// Process implements ExternalProcessorServer: it runs one stream (one HTTP
// request at one filter) through a router.Processor, or, for the upstream
// filter's streams (one per attempt), through an upstream.Processor. The
// upstream filter is told apart by the gRPC initial metadata the control
// plane configures for it, or by the upstream request_attributes its first
// message carries (the router-level filter requests none).
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return endOfStream(err)
	}
	if isUpstreamStream(ctx, first) {
		return s.processUpstream(ctx, stream, first)
	}
	p := s.router.NewProcessor()
	// The processor may also answer on its own, when the upstream processor
	// fails the request's attempt (router.Processor.AttemptFailed): every
	// send goes through it.
	p.Attach(ctx, stream)
	// The usage event is emitted however the stream ends; its context must
	// not be the cancelled stream's.
	defer p.Close(context.WithoutCancel(ctx))
	for req := first; ; {
		resp, err := p.Process(ctx, req)
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "ext_proc protocol violation",
				slog.String("request_id", p.RequestID()), slog.Any("error", err))
			return err
		}
		if resp != nil {
			if err := p.Send(resp); err != nil {
				return err
			}
		}
		if req, err = stream.Recv(); err != nil {
			return endOfStream(err)
		}
	}
}

// endOfStream maps the error that ended a Recv loop to Process's result.
// Envoy half-closes (io.EOF) when it expects nothing more, and resets the
// stream (Canceled) when the request is destroyed early, e.g. the client
// went away. Neither is an error here.
func endOfStream(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

func isUpstreamStream(ctx context.Context, first *extprocv3.ProcessingRequest) bool {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(dataplane.FilterHeader); len(v) > 0 {
			return v[0] == dataplane.FilterUpstream
		}
	}
	_, ok := first.GetAttributes()[dataplane.AttributesKey].GetFields()[dataplane.AttributeBackend]
	return ok
}

// processUpstream runs an upstream filter stream. It never ends the stream
// with an error of its own: depending on the Envoy release an upstream
// filter's failure stalls the attempt until its per-try timeout or is an
// immediate local reply that is never retried (docs/envoy.md, "Upstream
// filter failures"). A reply that cannot be sent because Envoy already
// gave up on the stream is reported to the processor (Abandoned), which
// tells the request's router-level processor.
func (s *Server) processUpstream(ctx context.Context, stream extprocv3.ExternalProcessor_ProcessServer, first *extprocv3.ProcessingRequest) error {
	var p *upstream.Processor
	if s.upstream != nil {
		p = s.upstream.NewProcessor()
		defer p.End()
	}
	for req := first; ; {
		var resp *extprocv3.ProcessingResponse
		if p != nil {
			resp = p.Process(ctx, req)
			if err := p.Err(); err != nil {
				// Fault injection of test builds only.
				return err
			}
		} else {
			resp = upstream.Unchanged(req)
		}
		if resp != nil {
			if err := ctx.Err(); err != nil {
				// Envoy ended the stream while the reply was being made.
				if p != nil {
					p.Abandoned(ctx, err)
				}
				return nil
			}
			if err := stream.Send(resp); err != nil {
				if p != nil {
					p.Abandoned(ctx, err)
				}
				return endOfStream(err)
			}
		}
		var err error
		if req, err = stream.Recv(); err != nil {
			return endOfStream(err)
		}
	}
}

// Listen opens the listener for addr with the default ListenOptions.
func Listen(addr string) (net.Listener, error) { return ListenWith(addr, ListenOptions{}) }

// ListenWith opens the listener for addr: "unix:///path" or "unix:/path" for
// a Unix socket (a stale socket file left by a dead process is removed first;
// a live one is an error), anything else a TCP host:port. A Unix socket is
// created with o's mode and group (socket.go).
func ListenWith(addr string, o ListenOptions) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		path, ok = strings.CutPrefix(addr, "unix:")
	}
	if !ok {
		lis, err := net.Listen("tcp", strings.TrimPrefix(addr, "tcp://"))
		if err != nil {
			return nil, fmt.Errorf("extproc: listen: %w", err)
		}
		return lis, nil
	}
	if path == "" {
		return nil, fmt.Errorf("extproc: listen: empty Unix socket path in %q", addr)
	}
	if err := checkSocketDir(filepath.Dir(path), o.Warn); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	return listenSocket(path, o)
}
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("extproc: listen: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("extproc: listen: %s exists and is not a socket", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("extproc: listen: another process is serving on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("extproc: listen: remove stale socket: %w", err)
	}
	return nil
}
