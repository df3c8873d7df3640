#!/usr/bin/env bash
# Finds the Postgres and Redis servers that ccproxy's tests and `make run` use,
# and starts them when they are not running. On Debian, as root, it installs
# the packages (postgresql, redis-server) when they are missing.
#
#   DATABASE_URL  Postgres to use (default postgres://postgres@127.0.0.1:5432/postgres)
#   REDIS_URL     Redis to use    (default redis://127.0.0.1:6379/0)
#
# When a URL is given explicitly the server is only checked, never started:
# it belongs to someone else. Prints nothing but progress on stderr.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

PG_URL=${DATABASE_URL:-}
REDIS_URL_IN=${REDIS_URL:-}

tcp_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    die "$* not installed; install it (sudo apt-get install $*) or set DATABASE_URL / REDIS_URL"
  fi
  command -v apt-get >/dev/null || die "$* not installed and apt-get is unavailable; install it or set DATABASE_URL / REDIS_URL"
  if [ $apt_updated = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

wait_for() { # description command...
  local what=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what did not become ready"
}

pg_ready_local() { tcp_open 127.0.0.1 5432 && psql_cmd -tAc 'select 1' >/dev/null 2>&1; }
psql_cmd() { psql "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" "$@"; }

ensure_postgres() {
  if [ -n "$PG_URL" ]; then
    command -v psql >/dev/null || apt_install postgresql-client
    psql "$PG_URL" -tAc 'select 1' >/dev/null || die "Postgres at DATABASE_URL is not reachable"
    log "postgres: using DATABASE_URL"
    return
  fi
  if pg_ready_local; then log "postgres: running on 127.0.0.1:5432"; return; fi
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    apt_install postgresql
  fi
  local ver
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$ver" ] || die "no Postgres cluster found under /etc/postgresql"
  if [ ! -d "/etc/postgresql/$ver/main" ]; then
    log "creating cluster $ver/main"
    pg_createcluster "$ver" main >&2
  fi
  local hba="/etc/postgresql/$ver/main/pg_hba.conf"
  # Tests connect over TCP as the postgres user without a password. Trust
  # loopback only, as a development database server does; never expose it.
  if ! grep -q '^# ccproxy: trust loopback' "$hba"; then
    log "configuring $hba: trust connections from loopback"
    { echo '# ccproxy: trust loopback'
      echo 'host all all 127.0.0.1/32 trust'
      echo 'host all all ::1/128 trust'
      cat "$hba"; } > "$hba.new" && mv "$hba.new" "$hba"
    chown postgres:postgres "$hba" 2>/dev/null || true
  fi
  log "starting postgres $ver/main"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >&2 || true
  wait_for "postgres" pg_ready_local
  log "postgres: started on 127.0.0.1:5432"
}

redis_ping() { redis-cli -u "${1:-redis://127.0.0.1:6379/0}" ping 2>/dev/null | grep -q PONG; }

ensure_redis() {
  if [ -n "$REDIS_URL_IN" ]; then
    command -v redis-cli >/dev/null || apt_install redis-tools
    redis_ping "$REDIS_URL_IN" || die "Redis at REDIS_URL is not reachable"
    log "redis: using REDIS_URL"
    return
  fi
  if command -v redis-cli >/dev/null && redis_ping; then log "redis: running on 127.0.0.1:6379"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/ccproxy-redis
  log "starting redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/ccproxy-redis --logfile /tmp/ccproxy-redis/redis.log >&2
  wait_for "redis" redis_ping
  log "redis: started on 127.0.0.1:6379"
}

ensure_database() { # name: create it when missing (for `make run`)
  local db=$1
  [ -n "$PG_URL" ] && return 0
  if [ "$(psql_cmd -tAc "select 1 from pg_database where datname = '$db'")" != 1 ]; then
    log "creating database $db"
    psql_cmd -qc "create database \"$db\"" >&2
  fi
}

ensure_postgres
ensure_redis
for db in "$@"; do ensure_database "$db"; done
