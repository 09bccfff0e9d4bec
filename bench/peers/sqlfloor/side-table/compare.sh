#!/usr/bin/env bash
# Would HOT updates make sai cheaper on PostgreSQL? The SQL floor (../run.sh's invoke -> claim
# -> complete, driven by pgbench with no sai in between) on sai's schema and on the side-table
# schema (schema.sql here: queue and deadline columns in a narrow table, so the wide row's
# updates can be HOT), alternating, in a scratch PostgreSQL of its own. Batch 100 is the shape
# of one busy replica's group commits; batch 10, of three replicas sharing the same load.
# Prints completed/s and the machine's CPU per completed invocation for each run, and the
# share of the wide row's updates that were HOT.
# usage: compare.sh [SECONDS] [ROUNDS] [BATCH...]   env: SAI=path to the sai binary
set -euo pipefail
SECS=${1:-15}
ROUNDS=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
BATCHES=("${@:-100 10}")
read -r -a BATCHES <<<"${BATCHES[*]}"
HERE=$(cd "$(dirname "$0")" && pwd)
FLOOR=$(cd "$HERE/.." && pwd)
SAI=${SAI:-$FLOOR/../../../target/release/sai}
. "$FLOOR/../common/lib.sh"
ensure_postgres

TMP=$(mktemp -d /tmp/peer-sidetable.XXXXXX)
SAI_PID=""; PRODUCER=""
cleanup() { stop_pid "$SAI_PID"; stop_pid "$PRODUCER"; stop_postgres; rm -rf "$TMP"; }
trap cleanup EXIT
PORT=$(free_port)
chmod 755 "$TMP"
start_postgres "$TMP" "$PORT"
BASE=postgres://postgres@127.0.0.1:$PORT
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

# sai's own schema, as sai creates it on start, in database sai; the side-table one in side.
"$SAI" serve --store "$BASE/sai" --listen 127.0.0.1:0 >"$TMP/sai.log" 2>&1 &
SAI_PID=$!
for _ in $(seq 1 200); do grep -q "ready" "$TMP/sai.log" && break; sleep 0.05; done
stop_pid "$SAI_PID"; SAI_PID=""
psql "$BASE/postgres" -c "CREATE DATABASE side"
psql "$BASE/side" -f "$HERE/schema.sql"

cpu_line() { awk '/^cpu /{print $2, $3, $4, $5, $6, $7, $8, $9; exit}' /proc/stat; }

# run SCHEMA(sai|side) BATCH -> one line of figures
run() {
  local schema=$1 batch=$2 scripts url=$BASE/$1
  if [ "$schema" = sai ]; then scripts=$FLOOR; else scripts=$HERE; fi
  psql "$url" -c "TRUNCATE sai_invocation, sai_change, sai_feed_head, sai_function" \
    -c "SELECT pg_stat_reset()" -c "CHECKPOINT" >/dev/null
  [ "$schema" = sai ] || psql "$url" -c "TRUNCATE sai_open, sai_ended"
  local before after
  before=$(cpu_line)
  "$PG_BIN/pgbench" -n -c 1 -T "$SECS" -D batch="$batch" -f "$scripts/producer.sql" "$url" \
    >"$TMP/producer.out" 2>&1 &
  PRODUCER=$!
  "$PG_BIN/pgbench" -n -c 4 -j 2 -T "$SECS" -D batch="$batch" -f "$scripts/worker.sql" "$url" \
    >"$TMP/worker.out" 2>&1 || { cat "$TMP/worker.out" >&2; exit 1; }
  wait "$PRODUCER" || { cat "$TMP/producer.out" >&2; exit 1; }
  PRODUCER=""
  after=$(cpu_line)
  # The statistics collector reports a moment after the backends end.
  sleep 1
  local completed hot
  completed=$(psql "$url" -At -c "SELECT count(*) FROM sai_invocation WHERE status = 'Succeeded'")
  hot=$(psql "$url" -At -c "SELECT round(100.0 * n_tup_hot_upd / greatest(n_tup_upd, 1))
                             FROM pg_stat_user_tables WHERE relname = 'sai_invocation'")
  python3 - "$schema" "$batch" "$SECS" "$completed" "$hot" "$before" "$after" <<'PY'
import sys
schema, batch, secs, completed, hot = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
before, after = ([int(v) for v in arg.split()] for arg in sys.argv[6:8])
used = [a - b for a, b in zip(after, before)]
busy = used[0] + used[1] + used[2] + used[5] + used[6]
steal = 100 * used[7] / max(sum(used), 1)
print(f"{schema:>4} schema, batch {batch:>3}: {completed / secs:6.0f} completed/s, "
      f"{busy * 10_000 / max(completed, 1):4.0f} µs machine CPU per completed, "
      f"{hot}% of the wide row's updates HOT, steal {steal:.1f}%")
PY
}

for round in $(seq 1 "$ROUNDS"); do
  for batch in "${BATCHES[@]}"; do
    run sai "$batch"
    run side "$batch"
  done
done
