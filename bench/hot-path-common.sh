# Shared by bench/hot-path.sh and bench/beside.sh (sourced, after `set -euo pipefail`): where
# things are, the run sizes, this checkout's release binary (built when missing), a scratch
# directory removed on exit, and one BullMQ run.
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SAI=${SAI:-$ROOT/target/release/sai}
N=${N:-40000}
PEER_N=${PEER_N:-20000}
if [ ! -x "$SAI" ]; then cargo build --release --manifest-path "$ROOT/Cargo.toml"; fi
OUT=$(mktemp -d "/tmp/sai-$(basename "$0" .sh).XXXXXX")
trap 'rm -rf "$OUT"' EXIT

# One BullMQ run of PEER_N jobs, 50 workers, Redis in memory: its RESULT line into FILE.
bullmq_run() { # mode file
  MODE=$1 "$HERE/peers/bullmq/run.sh" "$PEER_N" 50 mem | grep '^RESULT ' | sed 's/^RESULT //' >"$2"
}
