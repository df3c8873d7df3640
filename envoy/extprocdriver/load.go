package extprocdriver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// LoadConfig is how Run drives a scenario.
type LoadConfig struct {
	// Concurrency is the number of exchanges in flight, each worker running
	// one exchange after the other; at least 1.
	Concurrency int
	// Duration ends the run: exchanges started before it has passed
	// complete and count. Zero means Exchanges decides.
	Duration time.Duration
	// Exchanges is the run's length when Duration is zero.
	Exchanges int
	// Timeout bounds one exchange; zero means 10 s.
	Timeout time.Duration
	// PID is the server's process, whose CPU time and memory are read from
	// /proc; zero reads none.
	PID int
}

// Result is one measured run.
type Result struct {
	Exchanges int
	Wall      time.Duration
	// ReqPerSec is exchanges per second of wall time.
	ReqPerSec float64
	// Latency of one whole exchange: every message and reply on both
	// streams, as the driver saw it.
	LatencyMean, LatencyP50, LatencyP90, LatencyP99, LatencyMax time.Duration
	// MessagesPerExchange counts the ext_proc messages sent (each has a reply).
	MessagesPerExchange float64
	// DriverCPUPerReq is the driver process's own CPU time per exchange.
	DriverCPUPerReq time.Duration
	// The server's, when LoadConfig.PID is set: CPU time (user + system,
	// all threads) over the run per exchange and in cores, and its resident
	// memory at the end and at its peak since it started.
	ServerCPU       time.Duration
	ServerCPUPerReq time.Duration
	ServerCores     float64
	ServerRSS       int64
	ServerPeakRSS   int64
}

// Run runs s on clients (workers take them in turn) as cfg says and
// measures it. Every exchange is played by Envoy's rules and checked against
// the scenario's expectations; the first failure of any kind stops every
// worker and is returned, naming the exchange. Nothing is counted past an
// error.
func Run(ctx context.Context, s *Scenario, clients []extprocsvc.ExternalProcessorClient, cfg LoadConfig) (Result, error) {
	if cfg.Concurrency < 1 || len(clients) == 0 {
		return Result{}, errors.New("extprocdriver: Run needs a concurrency of at least 1 and a client")
	}
	if cfg.Duration <= 0 && cfg.Exchanges < 1 {
		return Result{}, errors.New("extprocdriver: Run needs a duration or a number of exchanges")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		lats     = make([][]time.Duration, cfg.Concurrency)
		messages = make([]int, cfg.Concurrency)
	)
	var server0 time.Duration
	if cfg.PID != 0 {
		var err error
		if server0, err = ProcessCPU(cfg.PID); err != nil {
			return Result{}, err
		}
	}
	self0 := selfCPU()
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := clients[w%len(clients)]
			v := NewVerifier(s)
			local := make([]time.Duration, 0, 1024)
			defer func() { lats[w] = local }()
			for {
				i := next.Add(1)
				if cfg.Duration > 0 && !time.Now().Before(deadline) || cfg.Duration <= 0 && i > int64(cfg.Exchanges) || ctx.Err() != nil {
					return
				}
				ectx, ecancel := context.WithTimeout(ctx, cfg.Timeout)
				t0 := time.Now()
				o, err := s.Exchange(ectx, client, nil)
				lat := time.Since(t0)
				ecancel()
				if err == nil {
					err = v.Verify(o)
				}
				if err != nil {
					if ctx.Err() == nil { // not the echo of another worker's failure
						cancel(fmt.Errorf("exchange %d: %w", i, err))
					}
					return
				}
				local = append(local, lat)
				messages[w] += o.Messages
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	self1 := selfCPU()
	if err := context.Cause(ctx); err != nil {
		return Result{}, err
	}

	all := slices.Concat(lats...)
	n := len(all)
	if n == 0 {
		return Result{}, errors.New("extprocdriver: no exchange completed")
	}
	slices.Sort(all)
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	var msgs int
	for _, m := range messages {
		msgs += m
	}
	r := Result{
		Exchanges:           n,
		Wall:                wall,
		ReqPerSec:           float64(n) / wall.Seconds(),
		LatencyMean:         sum / time.Duration(n),
		LatencyP50:          percentile(all, 0.50),
		LatencyP90:          percentile(all, 0.90),
		LatencyP99:          percentile(all, 0.99),
		LatencyMax:          all[n-1],
		MessagesPerExchange: float64(msgs) / float64(n),
		DriverCPUPerReq:     (self1 - self0) / time.Duration(n),
	}
	if cfg.PID != 0 {
		server1, err := ProcessCPU(cfg.PID)
		if err != nil {
			return Result{}, err
		}
		r.ServerCPU = server1 - server0
		r.ServerCPUPerReq = r.ServerCPU / time.Duration(n)
		r.ServerCores = r.ServerCPU.Seconds() / wall.Seconds()
		if r.ServerRSS, r.ServerPeakRSS, err = ProcessMemory(cfg.PID); err != nil {
			return Result{}, err
		}
	}
	return r, nil
}

// percentile is the nearest-rank q-quantile of sorted, which is not empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	rank := int(q*float64(len(sorted)) + 0.999999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Median is, metric by metric, the median of runs (the mean of the middle
// two for an even count); runs must not be empty.
func Median(runs []Result) Result {
	med := func(get func(Result) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = get(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	dur := func(get func(Result) time.Duration) time.Duration {
		return time.Duration(med(func(r Result) float64 { return float64(get(r)) }))
	}
	return Result{
		Exchanges:           int(med(func(r Result) float64 { return float64(r.Exchanges) })),
		Wall:                dur(func(r Result) time.Duration { return r.Wall }),
		ReqPerSec:           med(func(r Result) float64 { return r.ReqPerSec }),
		LatencyMean:         dur(func(r Result) time.Duration { return r.LatencyMean }),
		LatencyP50:          dur(func(r Result) time.Duration { return r.LatencyP50 }),
		LatencyP90:          dur(func(r Result) time.Duration { return r.LatencyP90 }),
		LatencyP99:          dur(func(r Result) time.Duration { return r.LatencyP99 }),
		LatencyMax:          dur(func(r Result) time.Duration { return r.LatencyMax }),
		MessagesPerExchange: med(func(r Result) float64 { return r.MessagesPerExchange }),
		DriverCPUPerReq:     dur(func(r Result) time.Duration { return r.DriverCPUPerReq }),
		ServerCPU:           dur(func(r Result) time.Duration { return r.ServerCPU }),
		ServerCPUPerReq:     dur(func(r Result) time.Duration { return r.ServerCPUPerReq }),
		ServerCores:         med(func(r Result) float64 { return r.ServerCores }),
		ServerRSS:           int64(med(func(r Result) float64 { return float64(r.ServerRSS) })),
		ServerPeakRSS:       int64(med(func(r Result) float64 { return float64(r.ServerPeakRSS) })),
	}
}
