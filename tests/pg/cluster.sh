#!/usr/bin/env bash
# cluster.sh start|stop DIR - a throw-away PostgreSQL cluster for the tests.
#
#   start  makes a new cluster in DIR (initdb; anything there before is
#          stopped and removed), listening only on a Unix socket in DIR
#          (listen_addresses ''), with fsync off and small buffers: test
#          data, nothing to keep. Creates the database upres_test, owned by
#          the role upres (trust authentication on the socket), and prints
#          its URL, which DIR/url also holds:
#            postgresql:///upres_test?host=DIR&user=upres
#   stop   stops it (fast shutdown) and removes DIR.
#
# The server is Debian's (scripts/setup.sh installs postgresql): its
# programs are found in $UPRES_PG_BIN, the newest /usr/lib/postgresql/*/bin,
# or beside the pg_ctl on PATH. PostgreSQL refuses to run as root, so as root
# the cluster belongs to, and the server runs as, the postgres user
# (runuser). DIR's path must leave room for the socket's name (a Unix
# socket path is at most 107 bytes). CMakeLists.txt starts one cluster per
# build tree as the ctest fixture "pg" and stops it at the end.
set -euo pipefail

die() { echo "cluster.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: cluster.sh start|stop DIR"
cmd=$1
dir=$2
case $dir in
  /*) ;;
  *) dir=$PWD/$dir ;;
esac
[ ${#dir} -le 90 ] || die "$dir: too long a path for a Unix socket in it"

# Debian's own folder first: on PATH, pg_ctl and initdb may be links to it without the rest
bin=${UPRES_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$bin" ] && command -v pg_ctl >/dev/null 2>&1; then
  bin=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
fi
for p in initdb pg_ctl createdb; do
  [ -n "$bin" ] && [ -x "$bin/$p" ] || die "no PostgreSQL server found (scripts/setup.sh installs postgresql)"
done

# as_owner CMD...: run as the cluster's owner (postgres when we are root)
if [ "$(id -u)" -eq 0 ]; then
  as_owner() { runuser -u postgres -- "$@"; }
else
  as_owner() { "$@"; }
fi

stop_cluster() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case $cmd in
  start)
    stop_cluster
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U upres -A trust -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 100
log_min_messages = warning
CONF
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
      || { cat "$dir/server.log" >&2; die "the server did not start"; }
    "$bin/createdb" -h "$dir" -U upres upres_test || die "createdb failed"
    url="postgresql:///upres_test?host=$dir&user=upres"
    echo "$url" >"$dir/url"
    echo "$url"
    ;;
  stop)
    stop_cluster
    ;;
  *)
    die "usage: cluster.sh start|stop DIR"
    ;;
esac
