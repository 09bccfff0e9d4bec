#!/usr/bin/env bash
# The dashboard's two figures, in Debian's headless Chromium (playwright-core from npm, as the
# browser test uses): time from navigation to the first page of invocations on screen with N
# finished invocations stored in one function (read from the data directory), and commit ->
# visible on the open page while invocations are made (and then run to Succeeded) at RATE/s.
#
# usage: bench/dashboard.sh [N]     (default 1000000; the seeded directory is kept in
#                                    target/bench-dashboard-N and reused)
# env:   SAI=path/to/sai (default target/release/sai, built when missing), RATE=100,
#        SECONDS_LIVE=30, LOADS=7 (page loads measured)
set -euo pipefail
N=${1:-1000000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SAI=${SAI:-$ROOT/target/release/sai}
if [ ! -x "$SAI" ]; then cargo build --release --manifest-path "$ROOT/Cargo.toml"; fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y -q chromium chromium-driver >/dev/null
fi
NODE_DIR=$ROOT/target/bench-dashboard-node
if [ ! -f "$NODE_DIR/.installed" ]; then
  mkdir -p "$NODE_DIR"
  cp "$ROOT/tests/dashboard/package.json" "$ROOT/tests/dashboard/package-lock.json" "$NODE_DIR/"
  (cd "$NODE_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  touch "$NODE_DIR/.installed"
fi

DIR=$ROOT/target/bench-dashboard-$N
if [ ! -f "$DIR/.seeded" ]; then
  echo "seeding $N finished invocations in one function (sai bench history) ..."
  "$SAI" bench --runs 1 history --finished "$N" --open 0 --functions 1 --duration 1s \
    --dir "$DIR" --out "$DIR-report" >/dev/null
  touch "$DIR/.seeded"
fi

LOG=$(mktemp /tmp/sai-dashboard.XXXXXX)
"$SAI" serve --data-dir "$DIR" --listen 127.0.0.1:0 --http 127.0.0.1:0 >"$LOG" 2>/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -f "$LOG"' EXIT
until grep -q '^sai ready:' "$LOG"; do sleep 0.2; done
READY=$(grep '^sai ready:' "$LOG")
GRPC=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' <<<"$READY")
HTTP=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$READY")

NODE_PATH=$NODE_DIR/node_modules SAI_HTTP=http://$HTTP SAI_SERVER=$GRPC STORED=$N \
  RATE=${RATE:-100} SECONDS_LIVE=${SECONDS_LIVE:-30} LOADS=${LOADS:-7} \
  node "$HERE/dashboard/measure.js"
