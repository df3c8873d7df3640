#!/usr/bin/env bash
# bench-extproc.sh — measures the ext_proc server's CPU per request with the
# project's Envoy-playing driver (cmd/extproc-bench, package
# envoy/extprocdriver) on the scenarios in extproc/testdata/bench. Run by
# `make bench`; the numbers go to docs/performance.md.
#
# It builds cmd/ccproxy-benchserver and cmd/extproc-bench into a cache
# directory and, for each scenario, first plays one exchange in full (-dump),
# then measures each concurrency level: the driver starts a fresh server on a
# Unix socket in a temporary directory, warms it up, measures BENCH_REPEAT
# runs of BENCH_DURATION, reads the server's CPU time from /proc and stops it.
# The medians of all levels are printed at the end. Any failure — a build,
# a server that does not come up, dies or does not stop cleanly, a protocol
# violation or an unmet expectation — stops the script with exit 1.
#
# With BENCH_SERVERS it compares servers instead, interleaved: BENCH_ROUNDS
# rounds, each running every scenario and level once per server (the order of
# the servers alternating from round to round, so that a drift of the
# machine's load does not favour one), then the per-cell medians over the
# rounds and each server's ratio to the first. A server is any binary that
# serves ext_proc on the address given by its -addr flag, e.g. the bench
# server built from another commit.
#
# Environment (all optional):
#   BENCH_SCENARIOS     scenario files  (default: extproc/testdata/bench/plan-passthrough-stream.json,
#                                        bedrock-stream.json and bedrock-nonstream.json)
#   BENCH_CONCURRENCY   levels to run   (default: "1 16")
#   BENCH_DURATION      per run         (default: 6s)
#   BENCH_REPEAT        runs per level  (default: 3; the median is reported)
#   BENCH_WARMUP        exchanges before measuring (default: 200)
#   BENCH_SERVERS       "name=binary name=binary …": compare these servers
#   BENCH_ROUNDS        rounds of a comparison (default: 5)
#   BENCH_CACHE         binaries        (default: ${XDG_CACHE_HOME:-$HOME/.cache}/ccproxy/bench)
#   BENCH_PIN           1: server on CPU 0, driver on CPU 1 (taskset), so that
#                       they do not compete for a core; default unpinned
#   BENCH_SKIP_VARIANT  0: do not run the Plan scenario a second time with
#                       -skip-plan-request-bodies (CCPROXY_PLAN_REQUEST_BODY=skip)
#   BENCH_GOMAXPROCS    the server's GOMAXPROCS (default: Go's choice, the CPU
#                       count or the container's CPU limit)
#   GO                  go command      (default: go)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
go_cmd=${GO:-go}
scenarios=${BENCH_SCENARIOS:-$root/extproc/testdata/bench/plan-passthrough-stream.json $root/extproc/testdata/bench/bedrock-stream.json $root/extproc/testdata/bench/bedrock-nonstream.json}
levels=${BENCH_CONCURRENCY:-1 16}
duration=${BENCH_DURATION:-6s}
repeat=${BENCH_REPEAT:-3}
warmup=${BENCH_WARMUP:-200}
rounds=${BENCH_ROUNDS:-5}
cache=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ccproxy/bench}

die() { echo "bench-extproc: FAIL: $*" >&2; exit 1; }

server_prefix=() driver_prefix=() placement=unpinned
if [[ ${BENCH_PIN:-0} == 1 ]]; then
	command -v taskset >/dev/null || die "BENCH_PIN=1 needs taskset (util-linux)"
	server_prefix=(taskset -c 0) driver_prefix=(taskset -c 1) placement="server on CPU 0, driver on CPU 1"
fi
if [[ -n ${BENCH_GOMAXPROCS:-} ]]; then
	# env and taskset exec the server: the driver's child pid stays the server's.
	server_prefix=(env "GOMAXPROCS=$BENCH_GOMAXPROCS" "${server_prefix[@]}")
	placement="$placement, server GOMAXPROCS=$BENCH_GOMAXPROCS"
fi

for scenario in $scenarios; do
	[[ -f $scenario ]] || die "scenario not found: $scenario"
done

mkdir -p "$cache"
driver=$cache/extproc-bench
echo "bench-extproc: building extproc-bench and ccproxy-benchserver into $cache"
(cd "$root" && "$go_cmd" build -o "$driver" ./cmd/extproc-bench) || die "building extproc-bench"
declare -a names=() binaries=()
if [[ -n ${BENCH_SERVERS:-} ]]; then
	for spec in $BENCH_SERVERS; do
		[[ $spec == *=* ]] || die "BENCH_SERVERS entry $spec is not name=binary"
		[[ -x ${spec#*=} ]] || die "server binary not found: ${spec#*=}"
		names+=("${spec%%=*}") binaries+=("${spec#*=}")
	done
else
	(cd "$root" && "$go_cmd" build -o "$cache/ccproxy-benchserver" ./cmd/ccproxy-benchserver) || die "building ccproxy-benchserver"
	names=(ccproxy) binaries=("$cache/ccproxy-benchserver")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ccproxy-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
addr=unix://$tmp/extproc.sock

# drive SERVER-BINARY DRIVER-ARGS…: one driver invocation that starts the
# server (with the arguments in server_args), with the server's output in
# $tmp/server.log (shown on failure).
server_args=()
drive() {
	local bin=$1
	shift
	if ! "${driver_prefix[@]}" "$driver" -addr "$addr" -server-log "$tmp/server.log" "$@" -- "${server_prefix[@]}" "$bin" -addr "$addr" "${server_args[@]}"; then
		echo "bench-extproc: server log:" >&2
		tail -n 30 "$tmp/server.log" >&2
		return 1
	fi
}

echo "bench-extproc: $(nproc) CPUs, $placement, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for i in "${!names[@]}"; do
	for scenario in $scenarios; do
		# One exchange in full first: a scenario that no longer matches the
		# server fails here with the whole exchange in the log.
		drive "${binaries[$i]}" -scenario "$scenario" -dump >"$tmp/dump.log" 2>&1 ||
			{ cat "$tmp/dump.log" >&2; die "the -dump exchange of $(basename "$scenario") failed on ${names[$i]}"; }
	done
done

if [[ -z ${BENCH_SERVERS:-} ]]; then
	summary=()
	for scenario in $scenarios; do
		for c in $levels; do
			out=$(drive "${binaries[0]}" -scenario "$scenario" -c "$c" -d "$duration" -repeat "$repeat" -warmup "$warmup") ||
				die "extproc-bench on $(basename "$scenario") at C=$c"
			echo "$out"
			summary+=("$(basename "$scenario" .json) C=$c $(grep -E '^(median|run 1/1):' <<<"$out")")
		done
	done
	# The Plan scenario again with CCPROXY_PLAN_REQUEST_BODY=skip: the
	# request is routed on its headers and its body never reaches extproc.
	plan=$root/extproc/testdata/bench/plan-passthrough-stream.json
	if [[ ${BENCH_SKIP_VARIANT:-1} == 1 && " $scenarios " == *" $plan "* ]]; then
		server_args=(-skip-plan-request-bodies)
		for c in $levels; do
			out=$(drive "${binaries[0]}" -scenario "$plan" -c "$c" -d "$duration" -repeat "$repeat" -warmup "$warmup") ||
				die "extproc-bench on $(basename "$plan") (bodies skipped) at C=$c"
			echo "$out"
			summary+=("plan-passthrough-stream, CCPROXY_PLAN_REQUEST_BODY=skip C=$c $(grep -E '^(median|run 1/1):' <<<"$out")")
		done
		server_args=()
	fi
	echo
	echo "bench-extproc: medians over $repeat run(s) of $duration ($placement; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
	printf '%s\n' "${summary[@]}"
	exit 0
fi

# A comparison: one line per cell and round in $results, then medians.
results=$tmp/results.tsv
field() { sed -E "s/.*\"$1\":([0-9.e+-]+).*/\1/" <<<"$2"; }
for ((round = 1; round <= rounds; round++)); do
	order=()
	for i in "${!names[@]}"; do
		if ((round % 2 == 0)); then order=("$i" "${order[@]}"); else order+=("$i"); fi
	done
	for scenario in $scenarios; do
		for c in $levels; do
			for i in "${order[@]}"; do
				line=$(drive "${binaries[$i]}" -scenario "$scenario" -c "$c" -d "$duration" -warmup "$warmup" -json) ||
					die "extproc-bench on $(basename "$scenario") at C=$c against ${names[$i]}"
				printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(basename "$scenario" .json)" "$c" "${names[$i]}" \
					"$(field server_cpu_per_req_us "$line")" "$(field req_per_s "$line")" "$(field latency_p50_us "$line")" \
					"$(field latency_p99_us "$line")" "$(field server_peak_rss_bytes "$line")" >>"$results"
				printf 'round %d/%d %-26s C=%-3s %-10s server CPU %6.0f µs/req  %7.1f req/s\n' "$round" "$rounds" \
					"$(basename "$scenario" .json)" "$c" "${names[$i]}" "$(field server_cpu_per_req_us "$line")" "$(field req_per_s "$line")"
			done
		done
	done
done

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# col SCENARIO C SERVER COLUMN: the median of a results column over the rounds.
col() { awk -F'\t' -v s="$1" -v c="$2" -v n="$3" -v k="$4" '$1 == s && $2 == c && $3 == n {print $k}' "$results" | median; }
echo
echo "bench-extproc: medians over $rounds interleaved rounds of $duration ($placement; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-26s %-4s %-10s %14s %9s %10s %10s %9s %8s\n' scenario C server 'CPU µs/req' req/s 'p50 µs' 'p99 µs' 'peak MiB' ratio
for scenario in $scenarios; do
	s=$(basename "$scenario" .json)
	for c in $levels; do
		base=
		for name in "${names[@]}"; do
			cpu=$(col "$s" "$c" "$name" 4)
			base=${base:-$cpu}
			printf '%-26s %-4s %-10s %14.0f %9.1f %10.0f %10.0f %9.1f %8.3f\n' "$s" "$c" "$name" "$cpu" \
				"$(col "$s" "$c" "$name" 5)" "$(col "$s" "$c" "$name" 6)" "$(col "$s" "$c" "$name" 7)" \
				"$(awk -v b="$(col "$s" "$c" "$name" 8)" 'BEGIN {print b / 1048576}')" "$(awk -v a="$cpu" -v b="$base" 'BEGIN {print a / b}')"
		done
	done
done
cp "$results" "$cache/last-comparison.tsv"
echo "bench-extproc: every run is in $cache/last-comparison.tsv"
