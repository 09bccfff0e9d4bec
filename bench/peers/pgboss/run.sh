#!/usr/bin/env bash
# pg-boss anchor on a scratch PostgreSQL (fsync and synchronous_commit on).
# usage: run.sh N CONCURRENCY        env: DATABASE_URL=... to use a running database instead
set -euo pipefail
N=${1:-20000}; CONC=${2:-64}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../common/lib.sh"

if [ ! -d "$HERE/node_modules/pg-boss" ]; then
  (cd "$HERE" && npm ci --no-audit --no-fund >/dev/null 2>&1 || npm install --no-audit --no-fund >/dev/null)
fi
TMP=""
cleanup() { stop_postgres; [ -n "$TMP" ] && rm -rf "$TMP"; }
trap cleanup EXIT
if [ -z "${DATABASE_URL:-}" ]; then
  TMP=$(mktemp -d /tmp/peer-pgboss.XXXXXX)
  PORT=$(free_port)
  start_postgres "$TMP" "$PORT"
  DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/pgboss
fi
echo "# pg-boss $(node -p 'require("'"$HERE"'/node_modules/pg-boss/package.json").version') node $(node --version) N=$N C=$CONC"
DATABASE_URL=$DATABASE_URL timeout 900 node "$HERE/bench.mjs" "$N" "$CONC"
