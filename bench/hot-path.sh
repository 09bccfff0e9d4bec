#!/usr/bin/env bash
# The hot path beside BullMQ: sai's end-to-end throughput (accepted -> leased -> succeeded)
# against BullMQ's on Redis, for each producer shape, interleaved round by round so that the
# machine's drift weighs on both alike; then synced invoke beside the tonic+DashMap baseline.
#
# usage: bench/hot-path.sh [ROUNDS]        (default 3; medians and ratios at the end)
# env:   SAI=path/to/sai (default target/release/sai, built when missing), N=40000 (sai's
#        invocations per run), PEER_N=20000 (BullMQ's jobs per run)
set -euo pipefail
ROUNDS=${1:-3}
# shellcheck source=bench/hot-path-common.sh
. "$(dirname "$0")/hot-path-common.sh"

# shape label, BullMQ mode, sai e2e flags
SHAPES=(
  "streamed|add|--invoke-stream"
  "unary|add|"
  "batched|bulk|--invoke-batch 100 --producers 10"
)

bullmq() { # mode label round
  bullmq_run "$1" "$OUT/bullmq-$2-$3.json"
  echo "bullmq $1 round $3: $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["e2e_rate"])' "$OUT/bullmq-$2-$3.json")/s"
}
sai_e2e() { # label round flags...
  local label=$1 round=$2; shift 2
  # shellcheck disable=SC2068
  "$SAI" bench --runs 1 e2e --invocations "$N" $@ --out "$OUT/sai-$label-$round" >/dev/null
  echo "sai $label round $round: $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["rows"][0]["completed/s"])' "$OUT/sai-$label-$round/e2e.json")/s"
}

for round in $(seq 1 "$ROUNDS"); do
  for shape in "${SHAPES[@]}"; do
    IFS='|' read -r label mode flags <<<"$shape"
    # BullMQ's `add` run serves both one-at-a-time shapes; it is run once per round.
    if [ "$label" != unary ]; then bullmq "$mode" "$label" "$round"; fi
    # shellcheck disable=SC2086
    sai_e2e "$label" "$round" $flags
  done
done
"$SAI" bench --runs 5 invoke --modes sync --out "$OUT/invoke"

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def rate(path, key):
    with open(path) as f:
        doc = json.load(f)
    return doc["rows"][0][key] if "rows" in doc else doc[key]
print("\nshape     sai e2e/s  BullMQ e2e/s  ratio  (per round)")
for label, peer in (("streamed", "streamed"), ("unary", "streamed"), ("batched", "batched")):
    sai = [rate(f"{out}/sai-{label}-{r}/e2e.json", "completed/s") for r in range(1, rounds + 1)]
    bull = [rate(f"{out}/bullmq-{peer}-{r}.json", "e2e_rate") for r in range(1, rounds + 1)]
    ratios = " ".join(f"{s / b:.2f}x" for s, b in zip(sai, bull))
    print(f"{label:9} {statistics.median(sai):9.0f} {statistics.median(bull):13.0f} "
          f"{statistics.median(sai) / statistics.median(bull):5.2f}x  ({ratios})")
with open(f"{out}/invoke/invoke.json") as f:
    rows = {row["server"]: row for row in json.load(f)["rows"]}
sync = next(row for name, row in rows.items() if name != "baseline")
print(f"synced invoke: {sync['invocations/s']}/s, {sync['% of baseline']}% of the baseline "
      f"({rows['baseline']['invocations/s']}/s)")
PY
