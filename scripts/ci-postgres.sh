#!/usr/bin/env bash
# PostgreSQL for the feedback-store tests (tests/feedback).
#
#   bash scripts/ci-postgres.sh [install]
#       Makes sure the server binaries (initdb, pg_ctl) are here: installs the Debian
#       package `postgresql` with apt-get when they are missing. The tests then start
#       their own throwaway cluster (see tests/feedback/conftest.py); under CI=true they
#       fail, rather than skip, when they cannot.
#   eval "$(bash scripts/ci-postgres.sh start)"
#       Also starts a throwaway cluster on a free loopback port and prints
#           export RAGREC_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/postgres
#           export RAGREC_TEST_POSTGRES_DIR=/tmp/ragrec-pg-XXXX
#       for the tests to use instead of starting their own.
#   bash scripts/ci-postgres.sh stop "$RAGREC_TEST_POSTGRES_DIR"
#       Stops that cluster and removes its folder.
#
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
set -euo pipefail

log() { echo "ci-postgres: $*" >&2; }

find_bindir() {
  local pg_ctl
  if pg_ctl=$(command -v pg_ctl) && command -v initdb >/dev/null; then
    dirname "$(readlink -f "$pg_ctl")"
    return 0
  fi
  # Debian keeps the server binaries off PATH, one folder per major version.
  local newest
  newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$newest" ] && [ -x "$newest/pg_ctl" ] && [ -x "$newest/initdb" ]; then
    echo "$newest"
    return 0
  fi
  return 1
}

install() {
  local bindir
  if bindir=$(find_bindir); then
    log "server binaries in $bindir"
    echo "$bindir"
    return 0
  fi
  if ! command -v apt-get >/dev/null; then
    log "no PostgreSQL server binaries and no apt-get: install PostgreSQL 13 or newer"
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  log "installing the Debian package postgresql"
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    postgresql >&2
  bindir=$(find_bindir) || { log "postgresql installed, but no initdb/pg_ctl found"; return 1; }
  log "server binaries in $bindir"
  echo "$bindir"
}

as_server_user() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local bindir dir port
  bindir=$(install)
  dir=$(mktemp -d /tmp/ragrec-pg-XXXXXX)
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
  as_server_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
    --no-sync >/dev/null
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_server_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >&2 || {
    log "the server did not start; its log:"
    cat "$dir/server.log" >&2 || true
    return 1
  }
  echo "export RAGREC_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/postgres"
  echo "export RAGREC_TEST_POSTGRES_DIR=$dir"
}

stop() {
  local dir=${1:?usage: ci-postgres.sh stop DIR}
  local bindir
  bindir=$(find_bindir)
  as_server_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
  rm -rf "$dir"
}

case "${1:-install}" in
  install) install >/dev/null ;;
  start) start ;;
  stop) stop "${2:-}" ;;
  *) log "usage: ci-postgres.sh [install | start | stop DIR]"; exit 2 ;;
esac
