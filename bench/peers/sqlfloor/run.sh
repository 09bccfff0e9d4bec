#!/usr/bin/env bash
# The SQL floor under sai on PostgreSQL: the statements sai's PostgreSQL backend runs for
# invoke -> claim -> complete, on sai's own schema, driven by pgbench with no sai in between
# (1 producer of 100 invocations per transaction, 4 workers claiming and completing up to 100
# at a time). What it completes per second is what the same rows, indexes, feed appends and
# WAL flushes cost PostgreSQL on this machine; sai's end-to-end figure is measured against it.
# usage: run.sh [SECONDS]      env: DATABASE_URL=... (a database sai may own; its sai_* tables
#                              are created by sai and emptied here), SAI=path to the sai binary
set -euo pipefail
SECS=${1:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
SAI=${SAI:-$HERE/../../../target/release/sai}
. "$HERE/../common/lib.sh"
ensure_postgres

TMP=$(mktemp -d /tmp/peer-sqlfloor.XXXXXX)
SAI_PID=""; PRODUCER=""
cleanup() { stop_pid "$SAI_PID"; stop_pid "$PRODUCER"; [ -z "${OWN_PG:-}" ] || stop_postgres; rm -rf "$TMP"; }
trap cleanup EXIT
if [ -z "${DATABASE_URL:-}" ]; then
  OWN_PG=1
  PORT=$(free_port)
  chmod 755 "$TMP"
  start_postgres "$TMP" "$PORT"
  DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/sai
fi

# sai creates its schema (the migration it runs on start), then stops.
"$SAI" serve --store "$DATABASE_URL" --listen 127.0.0.1:0 >"$TMP/sai.log" 2>&1 &
SAI_PID=$!
for _ in $(seq 1 200); do grep -q "listening\|ready" "$TMP/sai.log" && break; sleep 0.05; done
stop_pid "$SAI_PID"; SAI_PID=""
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
psql -c "TRUNCATE sai_invocation, sai_change, sai_feed_head, sai_function"

# The machine's CPU counters (user nice system idle iowait irq softirq steal), before and after.
cpu_line() { awk '/^cpu /{print $2, $3, $4, $5, $6, $7, $8, $9; exit}' /proc/stat; }
CPU_BEFORE=$(cpu_line)

"$PG_BIN/pgbench" -n -c 1 -T "$SECS" -D batch=100 -f "$HERE/producer.sql" "$DATABASE_URL" >"$TMP/producer.out" 2>&1 &
PRODUCER=$!
"$PG_BIN/pgbench" -n -c 4 -j 2 -T "$SECS" -D batch=100 -f "$HERE/worker.sql" "$DATABASE_URL" >"$TMP/worker.out" 2>&1 || {
  cat "$TMP/worker.out" >&2; exit 1; }
wait "$PRODUCER" || { cat "$TMP/producer.out" >&2; exit 1; }
PRODUCER=""
CPU_AFTER=$(cpu_line)
read -r accepted completed < <(psql -At -F ' ' -c \
  "SELECT count(*), count(*) FILTER (WHERE status = 'Succeeded') FROM sai_invocation")
python3 - "$SECS" "$accepted" "$completed" "$CPU_BEFORE" "$CPU_AFTER" <<'PY'
import json, sys
secs, accepted, completed = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# Busy ticks (user nice system irq softirq) and steal over the run, USER_HZ = 100.
before, after = ([int(v) for v in arg.split()] for arg in sys.argv[4:6])
used = [a - b for a, b in zip(after, before)]
busy = used[0] + used[1] + used[2] + used[5] + used[6]
machine_us = busy * 10_000 / max(completed, 1)
steal = 100 * used[7] / max(sum(used), 1)
print(f"SQL floor: {completed / secs:.0f} completed/s, {accepted / secs:.0f} accepted/s, "
      f"backlog {accepted - completed} after {secs:.0f} s; machine CPU {machine_us:.0f} µs "
      f"per completed invocation, steal {steal:.1f}%")
print("RESULT " + json.dumps({"completed_per_s": round(completed / secs),
      "accepted_per_s": round(accepted / secs), "backlog": accepted - completed, "seconds": secs,
      "machine_cpu_us_per_completed": round(machine_us), "steal_percent": round(steal, 1)}))
PY
