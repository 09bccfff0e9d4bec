#!/usr/bin/env bash
# sai on PostgreSQL purging as fast as it invokes: a soak at RATE/s for DURATION with a 30 s
# retention on a scratch PostgreSQL, sampling the tables' size (sai_history_disk_bytes: the
# invocation and change tables) every 10 s, then the rows left in the change feed, which
# --watch-history (100,000 by default) bounds. With SAI_BEFORE=path/to/older/sai, that build
# runs first on the same PostgreSQL, each on an emptied database.
# usage: bench/pg-feed.sh [DURATION] [RATE]     (build first: cargo build --release)
set -euo pipefail
DURATION=${1:-4m}; RATE=${2:-2000}
HERE=$(cd "$(dirname "$0")" && pwd)
SAI=${SAI:-$HERE/../target/release/sai}
. "$HERE/peers/common/lib.sh"

TMP=$(mktemp -d /tmp/sai-pg-feed.XXXXXX)
cleanup() { stop_postgres; rm -rf "$TMP"; }
trap cleanup EXIT
PORT=$(free_port)
start_postgres "$TMP" "$PORT"
URL=postgres://postgres@127.0.0.1:$PORT/sai
echo "# PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); $(nproc) cores; $(date -u +%FT%TZ)"

run() {
  local name=$1 sai=$2
  echo "## $name"
  "$sai" bench --runs 1 --out "$TMP/out-$name" --store "$URL" soak --duration "$DURATION" \
    --rate "$RATE" --retention 30s 2>&1 >/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("[\"load\""):
        row = json.loads(line)
        print(f"t={row[1]}s RSS={row[2]} MiB open={row[4]} tables={row[9]} MiB purged={row[20]}")
    elif line.startswith("completed"):
        print(line.strip())'
  echo "change feed rows left: $("$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -Atc \
    'SELECT count(*) FROM sai_change' sai)"
}
if [ -n "${SAI_BEFORE:-}" ]; then run before "$SAI_BEFORE"; fi
run this "$SAI"
