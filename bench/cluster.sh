#!/usr/bin/env bash
# sai on PostgreSQL beside pg-boss on the same PostgreSQL, interleaved: end to end (invoke ->
# Succeeded, 64 in flight, fsync and synchronous_commit on) with one sai replica and with
# three (with the runtime's default threads, and with a third of the cores each), pg-boss's
# send/work loop at the same concurrency, the SQL floor (sai's own
# statements from pgbench, bench/peers/sqlfloor), and sai driven in the floor's own shape (one
# producer invoking 100 at a time, four workers taking and completing up to 100), which is
# what its share of the floor is read from. Then, once, a watcher on a replica of its own
# while another takes 1,000 invocations/s. One scratch PostgreSQL for all
# (bench/peers/common/lib.sh start_postgres), a database each.
# usage: bench/cluster.sh [ROUNDS] [N]     (build first: cargo build --release)
set -euo pipefail
ROUNDS=${1:-3}; N=${2:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
SAI=${SAI:-$HERE/../target/release/sai}
. "$HERE/peers/common/lib.sh"

TMP=$(mktemp -d /tmp/sai-cluster-bench.XXXXXX)
cleanup() { stop_postgres; rm -rf "$TMP"; }
trap cleanup EXIT
PORT=$(free_port)
start_postgres "$TMP" "$PORT"
BASE=postgres://postgres@127.0.0.1:$PORT
# Runtime threads of each of three replicas sharing this machine, as a container's CPU limit
# of a third of it would give them.
SHARE=$(( $(nproc) / 3 > 0 ? $(nproc) / 3 : 1 ))
echo "# PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), fsync on; $(nproc) cores; $(date -u +%F)"

sai_e2e() {
  "$SAI" bench --runs 1 --out "$TMP/out" --store "$BASE/sai" e2e --invocations "$N" \
    --replicas "$@" | awk '/postgres/ {print $0}'
}
for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round"
  echo "sai 1 replica:   $(sai_e2e 1 --producers 64)"
  echo "sai 3 replicas:  $(sai_e2e 3 --producers 64)"
  echo "sai 3 replicas, a share of the cores each: $(sai_e2e 3 --producers 64 --server-threads "$SHARE")"
  "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -qc "DROP SCHEMA IF EXISTS pgboss CASCADE" pgboss
  echo "pg-boss:         $(DATABASE_URL=$BASE/pgboss "$HERE/peers/pgboss/run.sh" "$N" 64 | grep RESULT)"
  echo "SQL floor:       $(SAI=$SAI DATABASE_URL=$BASE/sai "$HERE/peers/sqlfloor/run.sh" 20 | grep RESULT)"
  echo "sai, floor shape: $(sai_e2e 1 --producers 1 --invoke-batch 100 --workers 4 --batch 100)"
done
echo "## watch across replicas at 1,000/s (load on one, watcher on the other)"
"$SAI" bench --runs 1 --out "$TMP/out" --store "$BASE/sai" e2e --invocations 30000 \
  --producers 64 --rate 1000 --replicas 2 --watcher | awk '/postgres/ {print $0}'
