#!/usr/bin/env bash
# bench-extproc.sh — measures the running extproc's CPU per request with the
# Envoy-playing driver (../shared/tools/extproc-bench, see its README) on the
# scenarios in extproc/testdata/bench. Run by `make bench`; the numbers go to
# docs/performance.md.
#
# It builds cmd/ccproxy-benchserver and the driver into a cache
# directory (the driver's source tree may be read-only), starts the server on
# a Unix socket in a fresh temporary directory, checks one exchange in full
# (-dump), then measures each concurrency level and prints the per-level
# medians. Any failure — build, server not coming up or dying, the driver
# reporting a protocol or expectation error — stops the script with exit 1;
# the server and the temporary directory are always cleaned up.
#
# Environment (all optional):
#   EXTPROC_BENCH_SRC   driver source   (default: <repo>/../shared/tools/extproc-bench)
#   BENCH_SCENARIOS     scenario files  (default: extproc/testdata/bench/plan-passthrough-stream.json
#                                        and extproc/testdata/bench/bedrock-stream.json)
#   BENCH_CONCURRENCY   levels to run   (default: "1 16")
#   BENCH_DURATION      per run         (default: 6s)
#   BENCH_REPEAT        runs per level  (default: 3; the median is reported)
#   BENCH_CACHE         binaries        (default: ${XDG_CACHE_HOME:-$HOME/.cache}/ccproxy/bench)
#   BENCH_PIN           1: server on CPU 0, driver on CPU 1 (taskset), so that
#                       they do not compete for a core; default unpinned
#   BENCH_GOMAXPROCS    the server's GOMAXPROCS (default: Go's choice, the CPU
#                       count or the container's CPU limit)
#   GO                  go command      (default: go)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
go_cmd=${GO:-go}
driver_src=${EXTPROC_BENCH_SRC:-$root/../shared/tools/extproc-bench}
scenarios=${BENCH_SCENARIOS:-$root/extproc/testdata/bench/plan-passthrough-stream.json $root/extproc/testdata/bench/bedrock-stream.json}
levels=${BENCH_CONCURRENCY:-1 16}
duration=${BENCH_DURATION:-6s}
repeat=${BENCH_REPEAT:-3}
cache=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ccproxy/bench}

die() { echo "bench-extproc: FAIL: $*" >&2; exit 1; }

server_cpu=() driver_cpu=() placement=unpinned
if [[ ${BENCH_PIN:-0} == 1 ]]; then
	command -v taskset >/dev/null || die "BENCH_PIN=1 needs taskset (util-linux)"
	server_cpu=(taskset -c 0) driver_cpu=(taskset -c 1) placement="server on CPU 0, driver on CPU 1"
fi

[[ -f $driver_src/go.mod ]] || die "extproc-bench source not found at $driver_src (set EXTPROC_BENCH_SRC)"
for scenario in $scenarios; do
	[[ -f $scenario ]] || die "scenario not found: $scenario"
done

mkdir -p "$cache"
server_bin=$cache/ccproxy-benchserver
driver_bin=$cache/extproc-bench
echo "bench-extproc: building benchserver and extproc-bench into $cache"
(cd "$root" && "$go_cmd" build -o "$server_bin" ./cmd/ccproxy-benchserver) || die "building benchserver"
(cd "$driver_src" && "$go_cmd" build -o "$driver_bin" .) || die "building extproc-bench"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ccproxy-bench.XXXXXX")
sock=$tmp/extproc.sock
addr=unix://$sock
server_pid=

cleanup() {
	local rc=$?
	if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
		kill -INT "$server_pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$server_pid" 2>/dev/null; then
			echo "bench-extproc: server $server_pid ignored SIGINT; killing it" >&2
			kill -KILL "$server_pid" 2>/dev/null || true
		fi
		wait "$server_pid" 2>/dev/null || true
	fi
	if ((rc != 0)) && [[ -s $tmp/server.log ]]; then
		echo "bench-extproc: server log:" >&2
		tail -n 30 "$tmp/server.log" >&2
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_env=()
if [[ -n ${BENCH_GOMAXPROCS:-} ]]; then
	server_env=(env "GOMAXPROCS=$BENCH_GOMAXPROCS")
	placement="$placement, server GOMAXPROCS=$BENCH_GOMAXPROCS"
fi
"${server_env[@]}" "${server_cpu[@]}" "$server_bin" -addr "$addr" 2>"$tmp/server.log" &
server_pid=$!

server_alive() { kill -0 "$server_pid" 2>/dev/null || die "benchserver (pid $server_pid) exited"; }

for _ in $(seq 100); do
	[[ -S $sock ]] && break
	server_alive
	sleep 0.1
done
[[ -S $sock ]] || die "benchserver did not create $sock within 10s"

for scenario in $scenarios; do
	# One exchange in full first: a scenario that no longer matches the server
	# fails here with the whole exchange in the log rather than as a bare count.
	if ! "$driver_bin" -addr "$addr" -scenario "$scenario" -dump >"$tmp/dump.log" 2>&1; then
		cat "$tmp/dump.log" >&2
		die "the -dump exchange failed"
	fi

	echo "bench-extproc: $(basename "$scenario"), server pid $server_pid on $addr ($placement), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	declare -A median
	for c in $levels; do
		echo "== C=$c: -d $duration -repeat $repeat"
		out=$("${driver_cpu[@]}" "$driver_bin" -addr "$addr" -scenario "$scenario" -pid "$server_pid" \
			-c "$c" -d "$duration" -repeat "$repeat" 2>&1) || { echo "$out" >&2; die "extproc-bench at C=$c"; }
		echo "$out"
		server_alive
		line=$(grep '^median:' <<<"$out" || grep '^run 1/1:' <<<"$out") || die "no result line at C=$c"
		median[$c]=$line
	done

	echo
	echo "bench-extproc: medians over $repeat run(s) of $duration (load average now $(cut -d' ' -f1-3 /proc/loadavg))"
	printf '%-6s %18s %10s %14s %14s %10s\n' C 'server CPU/req' req/s 'latency p50' 'latency p99' RSS
	for c in $levels; do
		l=${median[$c]}
		cpu=$(sed -E 's/.*server CPU ([0-9]+µs)\/req.*/\1/' <<<"$l")
		rps=$(sed -E 's/.* ([0-9.]+) req\/s.*/\1/' <<<"$l")
		p50=$(sed -E 's/.* p50 ([0-9]+µs).*/\1/' <<<"$l")
		p99=$(sed -E 's/.* p99 ([0-9]+µs).*/\1/' <<<"$l")
		rss=$(sed -E 's/.*RSS ([0-9]+ MiB).*/\1/' <<<"$l")
		printf '%-6s %18s %10s %14s %14s %10s\n' "$c" "$cpu" "$rps" "$p50" "$p99" "$rss"
	done

done

# Stop the server here, not only in the trap, so that an unclean shutdown
# (non-zero exit after SIGINT) fails the benchmark.
kill -INT "$server_pid"
if ! wait "$server_pid"; then
	server_pid=
	die "benchserver did not shut down cleanly"
fi
server_pid=
