// Command extproc-bench measures what an ext_proc server costs per request
// by playing Envoy's part against it (package envoy/extprocdriver): it runs
// a scenario's HTTP exchange over and over at a given concurrency, checks
// every exchange as Envoy and the scenario require, and reports requests per
// second, latency percentiles and the server's CPU time per request, read
// from /proc/<pid>/stat before and after each run.
//
//	extproc-bench -scenario FILE [-addr ADDR] [-c C] [-d DURATION | -n N] [-repeat R] [-pid PID] [-- SERVER COMMAND...]
//
// The server is either running already (-addr, and -pid for its CPU time)
// or started by the driver from the command after "--", which must listen
// on -addr; the driver waits for it, measures it and stops it with SIGINT,
// and fails if it does not exit cleanly. Wrappers such as env and taskset
// exec the server, so their pid is the server's. -dump runs one exchange
// and prints every message. Any error — the server's, a protocol violation,
// an unmet expectation — ends the run with exit status 1.
//
// scripts/bench-extproc.sh runs it for `make bench`; docs/performance.md
// explains the numbers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ccproxy/ccproxy/envoy/extprocdriver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "extproc-bench: FAIL:", err)
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	scenario    string
	addr        string
	load        extprocdriver.LoadConfig
	warmup      int
	repeat      int
	conns       int
	dump        bool
	dumpDir     string
	json        bool
	cpuProfile  string
	serverWait  time.Duration
	serverLog   string
	serverStart []string
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("extproc-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: extproc-bench -scenario FILE [-addr ADDR] [-c C] [-d DURATION | -n N] [-repeat R] [-pid PID] [-dump] [-- SERVER COMMAND...]")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.scenario, "scenario", "", "scenario file (required)")
	fs.StringVar(&o.addr, "addr", "unix:///tmp/ccproxy-extproc-bench.sock", "the ext_proc server: unix:///path or host:port")
	fs.IntVar(&o.load.Concurrency, "c", 1, "exchanges in flight")
	fs.DurationVar(&o.load.Duration, "d", 5*time.Second, "length of a run")
	fs.IntVar(&o.load.Exchanges, "n", 0, "exchanges per run instead of -d")
	fs.DurationVar(&o.load.Timeout, "timeout", 10*time.Second, "limit for one exchange")
	fs.IntVar(&o.load.PID, "pid", 0, "the running server's process id, for its CPU time and memory")
	fs.IntVar(&o.warmup, "warmup", 200, "unmeasured exchanges before the first run")
	fs.IntVar(&o.repeat, "repeat", 1, "measured runs; with more than one the medians are reported too")
	fs.IntVar(&o.conns, "conns", 1, "gRPC connections the exchanges are spread over (Envoy keeps one per worker thread)")
	fs.BoolVar(&o.dump, "dump", false, "run one exchange, print every message and the resulting request and response, and exit")
	fs.StringVar(&o.dumpDir, "dump-dir", "", "with -dump, also write the resulting bodies in full to this directory")
	fs.BoolVar(&o.json, "json", false, "print each run and the median as one JSON object per line")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the driver's own CPU profile to this file")
	fs.DurationVar(&o.serverWait, "server-wait", 15*time.Second, "how long a started server may take to accept connections")
	fs.StringVar(&o.serverLog, "server-log", "", "file for a started server's output (default: this command's standard error)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.serverStart = fs.Args()
	switch {
	case o.scenario == "":
		fs.Usage()
		return o, errors.New("-scenario is required")
	case o.load.Concurrency < 1 || o.repeat < 1 || o.conns < 1 || o.warmup < 0:
		return o, errors.New("-c, -repeat and -conns must be at least 1, -warmup at least 0")
	case o.load.PID != 0 && len(o.serverStart) > 0:
		return o, errors.New("-pid and a server command are exclusive")
	}
	if o.load.Exchanges > 0 {
		o.load.Duration = 0
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	s, err := extprocdriver.Load(o.scenario)
	if err != nil {
		return err
	}
	if len(o.serverStart) > 0 {
		srv, startErr := startServer(ctx, o.serverStart, o.addr, o.serverWait, o.serverLog, stderr)
		if startErr != nil {
			return startErr
		}
		defer func() { err = errors.Join(err, srv.stop()) }()
		o.load.PID = srv.pid()
	}
	clients, closeConns, err := dial(o.addr, o.conns)
	if err != nil {
		return err
	}
	defer closeConns()
	if o.dump {
		return dump(ctx, s, clients[0], o.load.Timeout, o.dumpDir, stdout)
	}
	if o.cpuProfile != "" {
		f, createErr := os.Create(o.cpuProfile)
		if createErr != nil {
			return createErr
		}
		if startErr := pprof.StartCPUProfile(f); startErr != nil {
			_ = f.Close()
			return startErr
		}
		defer func() {
			pprof.StopCPUProfile()
			err = errors.Join(err, f.Close())
		}()
	}
	return measure(ctx, s, clients, o, stdout)
}

func measure(ctx context.Context, s *extprocdriver.Scenario, clients []extprocsvc.ExternalProcessorClient, o options, stdout io.Writer) error {
	if o.warmup > 0 {
		w := o.load
		w.Duration, w.Exchanges, w.PID = 0, o.warmup, 0
		if _, err := extprocdriver.Run(ctx, s, clients, w); err != nil {
			return fmt.Errorf("warmup: %w", err)
		}
	}
	if !o.json {
		fmt.Fprintf(stdout, "%s: C=%d, %s, server pid %d on %s\n", s.Name(), o.load.Concurrency, length(o.load), o.load.PID, o.addr)
	}
	var runs []extprocdriver.Result
	for i := range o.repeat {
		r, err := extprocdriver.Run(ctx, s, clients, o.load)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		runs = append(runs, r)
		if err := report(stdout, o, fmt.Sprintf("run %d/%d", i+1, o.repeat), r); err != nil {
			return err
		}
	}
	if o.repeat > 1 {
		return report(stdout, o, "median", extprocdriver.Median(runs))
	}
	return nil
}

func length(l extprocdriver.LoadConfig) string {
	if l.Duration > 0 {
		return l.Duration.String()
	}
	return fmt.Sprintf("%d exchanges", l.Exchanges)
}

// report prints one result: a line of text, or a JSON object with the
// times in microseconds for scripts.
func report(w io.Writer, o options, label string, r extprocdriver.Result) error {
	server := o.load.PID != 0
	if o.json {
		out := map[string]any{
			"label": label, "concurrency": o.load.Concurrency, "exchanges": r.Exchanges, "wall_s": r.Wall.Seconds(),
			"req_per_s": r.ReqPerSec, "latency_mean_us": us(r.LatencyMean), "latency_p50_us": us(r.LatencyP50),
			"latency_p90_us": us(r.LatencyP90), "latency_p99_us": us(r.LatencyP99), "latency_max_us": us(r.LatencyMax),
			"messages_per_exchange": r.MessagesPerExchange, "driver_cpu_per_req_us": us(r.DriverCPUPerReq),
		}
		if server {
			out["server_cpu_per_req_us"] = us(r.ServerCPUPerReq)
			out["server_cores"] = r.ServerCores
			out["server_rss_bytes"] = r.ServerRSS
			out["server_peak_rss_bytes"] = r.ServerPeakRSS
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	line := fmt.Sprintf("%-9s %d exchanges in %.2fs, %.1f req/s, latency mean %.0fµs p50 %.0fµs p90 %.0fµs p99 %.0fµs max %.0fµs, %.1f messages/exchange, driver CPU %.0fµs/req",
		label+":", r.Exchanges, r.Wall.Seconds(), r.ReqPerSec, us(r.LatencyMean), us(r.LatencyP50), us(r.LatencyP90), us(r.LatencyP99), us(r.LatencyMax),
		r.MessagesPerExchange, us(r.DriverCPUPerReq))
	if server {
		line += fmt.Sprintf(", server CPU %.0fµs/req (%.2f cores), RSS %.0f MiB (peak %.0f MiB)",
			us(r.ServerCPUPerReq), r.ServerCores, float64(r.ServerRSS)/(1<<20), float64(r.ServerPeakRSS)/(1<<20))
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// envoyWindow is Envoy's default HTTP/2 initial stream and connection
// window (Http2ProtocolOptions initial_stream_window_size and
// initial_connection_window_size).
const envoyWindow = 256 << 20

// dial opens conns gRPC connections to addr.
func dial(addr string, conns int) ([]extprocsvc.ExternalProcessorClient, func(), error) {
	target := addr
	if !strings.HasPrefix(addr, "unix:") {
		target = "passthrough:///" + strings.TrimPrefix(addr, "tcp://")
	}
	var ccs []*grpc.ClientConn
	closeAll := func() {
		for _, cc := range ccs {
			_ = cc.Close()
		}
	}
	var clients []extprocsvc.ExternalProcessorClient
	for range conns {
		cc, err := grpc.NewClient(target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Envoy's limit is the filter's max_receive_message_length, not
			// gRPC's 4 MiB default: a big scenario body must not fail here.
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
			// Envoy's HTTP/2 windows (256 MiB by default, Http2ProtocolOptions)
			// rather than grpc-go's 64 KiB with BDP pings: the server should
			// see the window updates and pings Envoy sends, not others.
			grpc.WithInitialWindowSize(envoyWindow), grpc.WithInitialConnWindowSize(envoyWindow))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		ccs = append(ccs, cc)
		clients = append(clients, extprocsvc.NewExternalProcessorClient(cc))
	}
	return clients, closeAll, nil
}

// dump runs one exchange and prints it in full, bodies shortened.
func dump(ctx context.Context, s *extprocdriver.Scenario, c extprocsvc.ExternalProcessorClient, timeout time.Duration, dir string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fmt.Fprintf(w, "== scenario: %s\n", s.Name())
	trace := func(stream string, sent bool, m proto.Message) {
		arrow := "->"
		if !sent {
			arrow = "<-"
		}
		m = proto.Clone(m)
		shorten(m.ProtoReflect(), 600)
		fmt.Fprintf(w, "== %s %s\n%s\n", stream, arrow, prototext.MarshalOptions{Multiline: true}.Format(m))
	}
	o, err := s.Exchange(ctx, c, trace)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "== %d messages\n", o.Messages)
	for _, m := range []struct {
		name string
		msg  extprocdriver.Message
	}{{"routed_request", o.RoutedRequest}, {"upstream_request", o.UpstreamRequest}, {"downstream_response", o.DownstreamResponse}} {
		fmt.Fprintf(w, "== %s (%d headers, %d body bytes)\n", m.name, m.msg.Headers.Len(), len(m.msg.Body))
		for k, v := range m.msg.Headers.All() {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
		body := m.msg.Body
		suffix := ""
		if len(body) > 2000 {
			body, suffix = body[:2000], fmt.Sprintf("…[%d bytes]", len(m.msg.Body))
		}
		fmt.Fprintf(w, "\n%s%s\n", strings.TrimRight(string(body), "\n"), suffix)
		if dir != "" {
			if err := os.WriteFile(filepath.Join(dir, m.name+".body"), m.msg.Body, 0o644); err != nil {
				return err
			}
		}
	}
	if err := extprocdriver.NewVerifier(s).Verify(o); err != nil {
		return err
	}
	fmt.Fprintln(w, "== expectations: OK")
	return nil
}

// shorten cuts every bytes field of m longer than limit, so that a dump of
// a 48 KB body stays readable.
func shorten(m protoreflect.Message, limit int) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			for i := range v.List().Len() {
				shorten(v.List().Get(i).Message(), limit)
			}
		case fd.IsMap() && fd.MapValue().Kind() == protoreflect.MessageKind:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				shorten(mv.Message(), limit)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Kind() == protoreflect.MessageKind:
			shorten(v.Message(), limit)
		case !fd.IsList() && fd.Kind() == protoreflect.BytesKind && len(v.Bytes()) > limit:
			b := v.Bytes()
			m.Set(fd, protoreflect.ValueOfBytes(fmt.Appendf(append([]byte(nil), b[:limit]...), "…[%d bytes]", len(b))))
		}
		return true
	})
}

// server is a server process the driver started.
type server struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // the process's exit; valid once exited is closed
	log    io.Closer
}

// startServer starts argv and waits until addr accepts connections.
func startServer(ctx context.Context, argv []string, addr string, wait time.Duration, logPath string, stderr io.Writer) (*server, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	s := &server{cmd: cmd, exited: make(chan struct{})}
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr, s.log = f, f, f
	}
	if err := cmd.Start(); err != nil {
		s.closeLog()
		return nil, fmt.Errorf("starting the server: %w", err)
	}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	network, address := "tcp", strings.TrimPrefix(addr, "tcp://")
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, address = "unix", p
	} else if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", p
	}
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout(network, address, time.Second)
		if err == nil {
			_ = c.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			s.closeLog()
			return nil, fmt.Errorf("the server exited before accepting connections on %s: %v", addr, s.err)
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), s.stop())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("the server did not accept connections on %s within %s", addr, wait), s.stop())
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop interrupts the server and waits for it; an exit other than a clean
// one after the interrupt is an error.
func (s *server) stop() error {
	defer s.closeLog()
	select {
	case <-s.exited:
		return fmt.Errorf("the server exited during the run: %v", s.err)
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("the server did not stop within 30s of SIGINT; killed")
	}
	if s.err != nil {
		return fmt.Errorf("the server did not shut down cleanly: %w", s.err)
	}
	return nil
}

func (s *server) closeLog() {
	if s.log != nil {
		_ = s.log.Close()
		s.log = nil
	}
}
