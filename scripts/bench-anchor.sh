#!/usr/bin/env bash
# bench-anchor.sh — one interleaved run comparing Envoy AI Gateway's ext_proc server (the
# anchor of docs/performance.md, which says how to build it) with ccproxy's bench server, both
# driven by the project's own driver (cmd/extproc-bench) on the same exchange: Claude Code's
# 48 KB turn to Bedrock with SigV4, streamed and not. Both binaries are built from this
# checkout into BENCH_CACHE; the anchor binary is the one argument.
#
#   scripts/bench-anchor.sh [-r ROUNDS] [-d DURATION] [-p | -P] [-o OUTDIR] AIGW_EXTPROC
#
#   -r ROUNDS    rounds (default 3); server order alternates per round
#   -d DURATION  length of each measured run (default 6s; after the driver's 200-exchange warmup)
#   -p           also run the ccproxy-only Plan pass-through cells (bodies read, and skipped:
#                CCPROXY_PLAN_REQUEST_BODY=skip)
#   -P           run only the ccproxy-only Plan pass-through cells
#   -o OUTDIR    keep the raw JSON lines and server logs there (default: a new /tmp dir)
#
# Cells: {bedrock stream, bedrock non-stream} x {C=1, C=16} x {default GOMAXPROCS, GOMAXPROCS=1
# for the server}; every run is a fresh server process. Prints per-cell medians over the rounds of
# server CPU µs/req, req/s, p50/p99 latency and peak RSS, with the ratio ccproxy/anchor.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/extproc/testdata/bench
ANCHOR_DIR=$BENCH/anchor
ANCHOR_CONFIG=$ANCHOR_DIR/filter-config.yaml
CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ccproxy/bench}
ROUNDS=3 DUR=6s PLAN=0 ONLY_PLAN=0 OUT=
while getopts "r:d:pPo:h" opt; do
  case $opt in
    r) ROUNDS=$OPTARG ;; d) DUR=$OPTARG ;; p) PLAN=1 ;; P) PLAN=1 ONLY_PLAN=1 ;; o) OUT=$OPTARG ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { sed -n '2,17p' "$0"; exit 2; }
ANCHOR=$(readlink -f "$1")
mkdir -p "$CACHE"
DRIVER=$CACHE/extproc-bench CCPROXY=$CACHE/ccproxy-benchserver
(cd "$ROOT" && go build -o "$DRIVER" ./cmd/extproc-bench && go build -o "$CCPROXY" ./cmd/ccproxy-benchserver) ||
  { echo "bench-anchor.sh: build failed" >&2; exit 1; }
for f in "$DRIVER" "$ANCHOR" "$CCPROXY"; do [ -x "$f" ] || { echo "bench-anchor.sh: $f: not executable" >&2; exit 2; }; done
OUT=${OUT:-$(mktemp -d /tmp/anchor-compare.XXXXXX)}
mkdir -p "$OUT"
SOCK=$OUT/s.sock
RESULTS=$OUT/results.tsv
: > "$RESULTS"

# scenario per (workload, server)
scenario() {
  case $1/$2 in
    stream/anchor) echo "$ANCHOR_DIR/bedrock-stream.json" ;;
    stream/ccproxy) echo "$BENCH/bedrock-stream.json" ;;
    nonstream/anchor) echo "$ANCHOR_DIR/bedrock-nonstream.json" ;;
    nonstream/ccproxy) echo "$BENCH/bedrock-nonstream.json" ;;
    plan/ccproxy|planskip/ccproxy) echo "$BENCH/plan-passthrough-stream.json" ;;
  esac
}

CELLS=()   # workload:C:procs
if [ $ONLY_PLAN = 0 ]; then
  for w in stream nonstream; do for p in default 1; do for c in 1 16; do CELLS+=("$w:$c:$p"); done; done; done
fi
if [ $PLAN = 1 ]; then
  for p in default 1; do for c in 1 16; do CELLS+=("plan:$c:$p" "planskip:$c:$p"); done; done
fi

FAILED=0
# run_one ROUND WORKLOAD C PROCS SERVER: one fresh server, one measured run, one JSON line.
run_one() {
  local round=$1 w=$2 c=$3 procs=$4 srv=$5 sc envs=() extra=() json log rc=0
  [ "$w" = planskip ] && extra=(-skip-plan-request-bodies)
  sc=$(scenario "$w" "$srv")
  [ "$procs" = default ] || envs=(GOMAXPROCS="$procs")
  json=$OUT/r$round-$w-c$c-p$procs-$srv.json
  log=$OUT/r$round-$w-c$c-p$procs-$srv.log
  rm -f "$SOCK"
  if [ "$srv" = ccproxy ]; then
    # The driver starts it, measures it and stops it (SIGINT, must exit cleanly).
    "$DRIVER" -scenario "$sc" -addr "unix://$SOCK" -c "$c" -d "$DUR" -repeat 1 -json \
      -- env "${envs[@]}" "$CCPROXY" -addr "unix://$SOCK" "${extra[@]}" > "$json" 2>> "$log" || rc=$?
  else
    # Started here: on SIGINT/SIGTERM it sleeps 15 s before stopping (cmd/extproc/main.go), so it is
    # measured by -pid and killed. pprof off (DISABLE_PPROF; idle otherwise), admin port random.
    env "${envs[@]}" DISABLE_PPROF=1 "$ANCHOR" -configPath "$ANCHOR_CONFIG" -extProcAddr "unix://$SOCK" \
      -adminPort 0 > "$log" 2>&1 &
    local pid=$!
    for _ in $(seq 300); do grep -q "External Processor is ready" "$log" && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
    "$DRIVER" -scenario "$sc" -addr "unix://$SOCK" -pid $pid -c "$c" -d "$DUR" -repeat 1 -json > "$json" 2>> "$log" || rc=$?
    kill -0 $pid 2>/dev/null || { echo "anchor exited during the run" >> "$log"; rc=1; }
    kill -KILL $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
  fi
  if [ $rc != 0 ] || ! grep -q server_cpu_per_req_us "$json"; then
    echo "FAIL round $round $w C=$c GOMAXPROCS=$procs $srv (see $log):" >&2; tail -3 "$log" >&2; FAILED=1; return
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$w" "$c" "$procs" "$srv" "$(tail -1 "$json")" >> "$RESULTS"
  printf '  r%s %-9s C=%-2s GOMAXPROCS=%-7s %-7s %s\n' "$round" "$w" "$c" "$procs" "$srv" \
    "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("cpu %.0fµs/req  %.0f req/s  p50 %.0fµs  p99 %.0fµs" % (d["server_cpu_per_req_us"], d["req_per_s"], d["latency_p50_us"], d["latency_p99_us"]))' "$(tail -1 "$json")")"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench-anchor.sh: $ROUNDS rounds x ${#CELLS[@]} cells, $DUR per run; anchor $ANCHOR, ccproxy $CCPROXY; nproc $(nproc); raw results in $OUT"
echo "load average at start: $LOAD_START"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order=(anchor ccproxy); else order=(ccproxy anchor); fi
  echo "round $round: order ${order[*]}"
  for cell in "${CELLS[@]}"; do
    IFS=: read -r w c procs <<< "$cell"
    for srv in "${order[@]}"; do
      [[ $w == plan* ]] && [ "$srv" = anchor ] && continue
      run_one "$round" "$w" "$c" "$procs" "$srv"
    done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RESULTS" "$ROUNDS" "$DUR" <<'PY'
import json, statistics, sys
path, rounds, dur = sys.argv[1:4]
rows = {}
for line in open(path):
    r, w, c, p, srv, js = line.rstrip("\n").split("\t", 5)
    rows.setdefault((w, int(c), p), {}).setdefault(srv, []).append(json.loads(js))
order = {"stream": 0, "nonstream": 1, "plan": 2, "planskip": 3}
keys = [("server_cpu_per_req_us", "cpu µs/req", 1), ("req_per_s", "req/s", 1), ("latency_p50_us", "p50 µs", 1),
        ("latency_p99_us", "p99 µs", 1), ("server_peak_rss_bytes", "peak RSS MiB", 1 / (1 << 20))]
print(f"\nmedians over {rounds} round(s) of {dur} (n = runs that passed)")
hdr = f"{'cell':<30} {'server':<8} {'n':>2} " + " ".join(f"{k[1]:>12}" for k in keys)
print(hdr); print("-" * len(hdr))
for cell in sorted(rows, key=lambda k: (order[k[0]], k[2] != "default", k[1])):
    w, c, p = cell
    name = f"{w} C={c} GOMAXPROCS={p}"
    med = {}
    for srv in ("anchor", "ccproxy"):
        runs = rows[cell].get(srv)
        if not runs:
            continue
        med[srv] = [statistics.median(r[k] for r in runs) * f for k, _, f in keys]
        print(f"{name:<30} {srv:<8} {len(runs):>2} " + " ".join(f"{v:>12.1f}" for v in med[srv]))
        name = ""
    if "anchor" in med and "ccproxy" in med:
        print(f"{'':<30} {'cc/anchor':<8} {'':>2} " + " ".join(
            f"{(b / a if a else float('nan')):>12.2f}" for a, b in zip(med["anchor"], med["ccproxy"])))
PY
echo
echo "load average at start: $LOAD_START; at end: $LOAD_END"
exit $FAILED
