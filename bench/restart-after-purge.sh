#!/usr/bin/env bash
# A restart after retention purged most of a function's history: how long the first
# oldest-first list pages take, and how much CPU the server spends in its first seconds,
# while the storage engine still holds the deletion markers of what was purged.
#
# Seeds DIR/seed once (FINISHED finished and 10,000 open invocations of one function, through
# `sai bench history`), purges every finished one with a server at a one-minute retention,
# then starts each build on its own copy of the purged directory and times, from the moment
# it is ready, 10 first pages of 50 oldest first (through the CLI, whose own start is ~5 ms),
# and reads the server's CPU 10 s after it is ready.
#
# usage: bench/restart-after-purge.sh DIR [FINISHED]     (default 3,000,000)
# env:   SAI=path/to/sai (default target/release/sai, built when missing);
#        SAI_BEFORE=path/to/another/sai to run the same restart with it first
set -euo pipefail
DIR=${1:?usage: bench/restart-after-purge.sh DIR [FINISHED]}
FINISHED=${2:-3000000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SAI=${SAI:-$ROOT/target/release/sai}
if [ ! -x "$SAI" ]; then cargo build --release --manifest-path "$ROOT/Cargo.toml"; fi
TARGET=seeded/function-0
SERVER_PID=

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

# start_server BIN DATA_DIR: starts it at a one-minute retention; sets SERVER_PID and ADDR
start_server() {
  local log=$2.log
  "$1" serve --data-dir "$2" --retention 1m --listen 127.0.0.1:0 --log-format json >"$log" 2>&1 &
  SERVER_PID=$!
  until grep -qs '^sai ready: grpc=' "$log"; do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.05
  done
  ADDR=$(sed -n 's/^sai ready: grpc=//p' "$log")
}

first_page() { # BIN: the oldest-first page of 50, as JSON
  "$1" --server "http://$ADDR" --account bench list "$TARGET" --asc --limit 50 --output json
}

cpu_seconds() { # PID: user + system CPU so far
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

if [ ! -d "$DIR/purged" ]; then
  if [ ! -d "$DIR/seed" ]; then
    "$SAI" bench --runs 1 history --finished "$FINISHED" --open 10000 --functions 1 \
      --dir "$DIR/seed" --duration 1s >/dev/null
  fi
  echo "purging the $FINISHED finished invocations..."
  start_server "$SAI" "$DIR/seed"
  # Done once the oldest record left is one of the open ones.
  until first_page "$SAI" | python3 -c '
import json, sys
page = json.load(sys.stdin)
first = (page.get("invocations") or [{}])[0]
sys.exit(0 if first.get("status") in ("Enqueued", "Queued") else 1)'; do
    sleep 2
  done
  stop_server
  mv "$DIR/seed" "$DIR/purged"
fi

restart() { # label BIN
  rm -rf "$DIR/run"
  cp -a "$DIR/purged" "$DIR/run"
  sync
  local started=$EPOCHREALTIME
  start_server "$2" "$DIR/run"
  local ready=$EPOCHREALTIME
  local pages=()
  for _ in $(seq 10); do
    local t0=$EPOCHREALTIME
    first_page "$2" >/dev/null
    pages+=("$(python3 -c "print(f'{($EPOCHREALTIME - $t0) * 1000:.1f}')")")
  done
  local until_ready
  until_ready=$(python3 -c "print(f'{$ready - $started:.2f}')")
  sleep "$(python3 -c "print(max(0.0, 10 - ($EPOCHREALTIME - $ready)))")"
  echo "$1: ready in ${until_ready} s; first pages oldest first (ms): ${pages[*]}; server CPU in its first 10 s: $(cpu_seconds "$SERVER_PID") s"
  stop_server
}

if [ -n "${SAI_BEFORE:-}" ]; then restart before "$SAI_BEFORE"; fi
restart this "$SAI"
rm -rf "$DIR/run"
