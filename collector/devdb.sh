#!/usr/bin/env bash
# Throwaway PostgreSQL 15 + TimescaleDB for the quick start, the tests and CI. Shipped inside the
# collector package (collector.devdb runs it from an installed wheel); deploy/devdb.sh runs this
# same file from a checkout.
#
#   devdb.sh install   install PostgreSQL 15 and TimescaleDB if missing (needs root)
#   devdb.sh start     initdb (once) into $DEVDB_DIR (default ./.devdb) and start on a free
#                      loopback port; prints the superuser URL and writes it to $DEVDB_DIR/url
#                      (run as root where the postgres user cannot reach $DEVDB_DIR, the
#                      cluster itself lives in /var/tmp/ig-devdb-<hash of $DEVDB_DIR>)
#                      exits 3 when TimescaleDB is not installed (run `install` first)
#   devdb.sh stop      stop the cluster
#   devdb.sh url       print the URL of the running cluster
#
# TimescaleDB is not packaged for Debian 12, so `install` builds Debian 13's source package
# (Apache edition) against PostgreSQL 15. A full (Community) edition already installed on the
# machine is kept and used. Every step says what failed and what to do next.
set -euo pipefail

PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
DEVDB_DIR=${DEVDB_DIR:-$PWD/.devdb}
SELF=${DEVDB_SELF:-$0}  # how the caller runs this script, for the "next:" hints
NOT_INSTALLED=3
BUILD_DIR=${DEVDB_BUILD_DIR:-$DEVDB_DIR/build}
# apache | timescale: which edition the cluster runs when the full edition is installed.
LICENSE=${TIMESCALEDB_LICENSE:-}

step() { printf '[devdb] %s\n' "$*" >&2; }
fail() { printf '[devdb] FAILED: %s\n[devdb] next: %s\n' "$1" "$2" >&2; exit "${3:-1}"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    fail "'$*' needs root" "run 'sudo $SELF install' once, or set DATABASE_URL to an existing TimescaleDB"
  fi
}

timescaledb_installed() {
  [ -f "/usr/share/postgresql/$PG_VERSION/extension/timescaledb.control" ] && \
    ls "/usr/lib/postgresql/$PG_VERSION/lib/"timescaledb*.so >/dev/null 2>&1
}

full_edition_installed() {
  ls "/usr/lib/postgresql/$PG_VERSION/lib/"timescaledb-tsl-*.so >/dev/null 2>&1
}

install_postgres() {
  if [ -x "$PG_BIN/initdb" ] && [ -d "/usr/include/postgresql/$PG_VERSION/server" ] && command -v cmake >/dev/null \
     && command -v dpkg-source >/dev/null; then
    return
  fi
  step "installing PostgreSQL $PG_VERSION from Debian"
  as_root apt-get update -qq || fail "apt-get update" "check the network to Debian's mirrors"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql-$PG_VERSION postgresql-server-dev-$PG_VERSION postgresql-client-$PG_VERSION \
    cmake gcc make dpkg-dev xz-utils libssl-dev >/dev/null \
    || fail "apt-get install postgresql-$PG_VERSION" "run it by hand to see apt's error"
}

install_timescaledb() {
  if timescaledb_installed; then
    step "TimescaleDB already installed ($(full_edition_installed && echo full || echo apache) edition)"
    return
  fi
  local src=/etc/apt/sources.list.d/devdb-trixie-src.sources
  if ! apt-cache showsrc timescaledb 2>/dev/null | grep -q '^Version'; then
    step "adding Debian 13 (trixie) source entries for timescaledb"
    as_root tee "$src" >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    as_root apt-get update -qq || fail "apt-get update with trixie sources" "check $src"
  fi
  mkdir -p "$BUILD_DIR"
  ( cd "$BUILD_DIR" && rm -rf timescaledb-*/ && apt-get source -qq timescaledb >/dev/null 2>&1 ) \
    || fail "apt-get source timescaledb" "check that dpkg-dev is installed and trixie deb-src is reachable"
  local dir
  dir=$(find "$BUILD_DIR" -maxdepth 1 -type d -name 'timescaledb-*' | head -1)
  step "building $(basename "$dir") (Apache edition) against PostgreSQL $PG_VERSION"
  ( cd "$dir" && cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPG_CONFIG="$PG_BIN/pg_config" \
      -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF \
      -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF >"$BUILD_DIR/cmake.log" 2>&1 \
    && make -C build -j"$(nproc)" >"$BUILD_DIR/make.log" 2>&1 ) \
    || fail "building TimescaleDB" "read $BUILD_DIR/cmake.log and $BUILD_DIR/make.log"
  as_root make -C "$dir/build" install >"$BUILD_DIR/install.log" 2>&1 \
    || fail "installing TimescaleDB" "read $BUILD_DIR/install.log"
  step "TimescaleDB installed"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_pg() {  # run a PostgreSQL binary as the cluster owner
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_dir() {  # where the cluster's own files live: data, socket, server log
  # The postgres user must reach them. A checkout under a private directory (mktemp -d makes
  # 0700 ones) is out of its reach, so the cluster then lives in a directory of its own.
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$(dirname "$DEVDB_DIR")" 2>/dev/null; then
    echo "/var/tmp/ig-devdb-$(printf %s "$DEVDB_DIR" | md5sum | cut -c1-12)"
  else
    echo "$DEVDB_DIR"
  fi
}

start() {
  timescaledb_installed || fail "TimescaleDB is not installed" "run '$SELF install' (as root)" "$NOT_INSTALLED"
  local pgdir
  pgdir=$(pg_dir)
  local data=$pgdir/data
  mkdir -p "$DEVDB_DIR" "$pgdir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$pgdir"; chmod 755 "$pgdir"; fi
  [ "$pgdir" = "$DEVDB_DIR" ] || step "cluster files in $pgdir (the postgres user cannot reach $DEVDB_DIR)"
  if [ -f "$DEVDB_DIR/url" ] && run_pg "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    cat "$DEVDB_DIR/url"; return
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    step "initdb $data"
    run_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DEVDB_DIR/initdb.log" 2>&1 \
      || fail "initdb" "read $DEVDB_DIR/initdb.log"
  fi
  local license=$LICENSE
  if [ -z "$license" ]; then full_edition_installed && license=timescale || license=apache; fi
  local port
  port=$(free_port)
  cat >"$data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pgdir'
shared_preload_libraries = 'timescaledb'
timescaledb.license = '$license'
timescaledb.telemetry_level = off
# No background job scheduler in the throwaway cluster: tests must not race policy jobs (a
# job killed by DROP DATABASE ... FORCE has crashed the server on PostgreSQL 15.20 with
# TimescaleDB 2.28), and the collector's own maintenance path is what then keeps rollups
# materialized. Real-time aggregation keeps every answer correct either way.
timescaledb.max_background_workers = ${DEVDB_TS_WORKERS:-0}
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  step "starting PostgreSQL on 127.0.0.1:$port (timescaledb.license=$license)"
  run_pg "$PG_BIN/pg_ctl" -D "$data" -l "$pgdir/postgres.log" -w -t 60 start >/dev/null \
    || fail "starting PostgreSQL" "read $pgdir/postgres.log"
  echo "postgresql://postgres@127.0.0.1:$port/postgres" | tee "$DEVDB_DIR/url"
}

stop() {
  local data
  data=$(pg_dir)/data
  [ -f "$data/PG_VERSION" ] || return 0
  run_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  rm -f "$DEVDB_DIR/url"
}

case "${1:-}" in
  install) install_postgres; install_timescaledb ;;
  start) start ;;
  stop) stop ;;
  url) cat "$DEVDB_DIR/url" ;;
  *) echo "usage: $SELF install|start|stop|url" >&2; exit 2 ;;
esac
