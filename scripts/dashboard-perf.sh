#!/usr/bin/env bash
# dashboard-perf.sh — measures the admin dashboard on the 5-million-event
# benchmark database (`make dashboard-perf`; not part of `make test`): the
# first load after login in Debian's chromium, every API call the pages
# make, and the first page's gzip bytes (dashboard/e2e/perf.mjs). The
# numbers go to docs/performance.md with the date, the machine and the
# load average this script prints.
#
# It builds (or reuses, migrating it) the database ccproxy_bench_5m through
# BenchmarkUsageQueries' setup (internal/store/query_bench_test.go), starts
# bin/ccproxy admin on it — on free local ports, its own Redis prefix (so it
# ingests nobody else's events) and its own admin account — runs the
# measurement and stops the server.
#
# Environment (all optional):
#   PERF_NOW       the browser's clock (default 2026-10-31T15:00:00Z: the
#                  generated data ends on 2026-11-01, so "today", "7 days",
#                  "30 days" and "this month" all fall on it)
#   PERF_MONTH     the developer list's month (default 2026-10)
#   PERF_TIMEZONE  the billing time zone (default UTC)
#   PERF_RUNS      repetitions of each API call (default 7)
#   PERF_LOADS     cold first loads (default 3)
#   PERF_API       0: measure the first loads only
#   DATABASE_URL   the Postgres server's maintenance database
#                  (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)
#   REDIS_URL      (default redis://127.0.0.1:6379/0)
#   CHROMIUM       (default /usr/bin/chromium)
set -euo pipefail
cd "$(dirname "$0")/.."

pg_admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
bench_db=$(node -e 'const u = new URL(process.argv[1]); u.pathname = "/ccproxy_bench_5m"; console.log(u.toString())' "$pg_admin")
redis=${REDIS_URL:-redis://127.0.0.1:6379/0}

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)); load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== the 5M-event database (built once; later runs only migrate it)"
DATABASE_URL=$pg_admin go test -v -run '^$' -bench 'BenchmarkUsageQueries/user_month_by_model$' -benchtime 1x -timeout 0 ./internal/store/ |
	grep -E 'reusing|building|built|ok|FAIL' || true
bin/ccproxy migrate up --database-url "$bench_db" >/dev/null

free_port() { node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })'; }
port=$(free_port)
grpc_port=$(free_port)
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
work=$(mktemp -d)
log=$work/admin.log
# The measurement's own admin account, its password set afresh each run.
printf '%s\n' "$password" | bin/ccproxy admin reset-password --username perf --password-stdin --enable \
	--database-url "$bench_db" >/dev/null 2>&1 || true

CCPROXY_ADMIN_USERNAME=perf CCPROXY_ADMIN_PASSWORD=$password \
	CCPROXY_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
	CCPROXY_SERVER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
	bin/ccproxy admin --database-url "$bench_db" --redis-url "$redis" --redis-prefix "ccproxy-perf-$$:" \
	--admin-addr "127.0.0.1:$port" --admin-grpc-addr "127.0.0.1:$grpc_port" --metrics-addr "" \
	--billing-timezone "${PERF_TIMEZONE:-UTC}" --log-format json --log-level warn >"$log" 2>&1 &
admin_pid=$!
cleanup() {
	kill "$admin_pid" 2>/dev/null || true
	wait "$admin_pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
	if curl -s -o /dev/null "http://127.0.0.1:$port/api/v1/auth/session"; then break; fi
	if ! kill -0 "$admin_pid" 2>/dev/null; then
		cat "$log"
		echo "ccproxy admin did not start" >&2
		exit 1
	fi
	sleep 0.2
done
# A password reset of an account that did not exist yet failed above; the
# server created it from CCPROXY_ADMIN_PASSWORD unless another admin exists.
if ! curl -sf -o /dev/null -H 'content-type: application/json' \
	-d "{\"username\":\"perf\",\"password\":\"$password\"}" "http://127.0.0.1:$port/api/v1/auth/login"; then
	printf '%s\n' "$password" | bin/ccproxy admin reset-password --username perf --password-stdin --enable \
		--database-url "$bench_db" >/dev/null
fi

echo "== measuring (billing time zone ${PERF_TIMEZONE:-UTC}; load average $(cut -d' ' -f1-3 /proc/loadavg))"
ADMIN="http://127.0.0.1:$port" USERNAME=perf PASSWORD=$password NOW=${PERF_NOW:-2026-10-31T15:00:00Z} \
	MONTH=${PERF_MONTH:-2026-10} RUNS=${PERF_RUNS:-7} LOADS=${PERF_LOADS:-3} API=${PERF_API:-1} \
	node dashboard/e2e/perf.mjs
echo "== done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
