#!/usr/bin/env bash
# The hot path of this checkout beside another build of sai, both beside BullMQ in the same
# rounds: is this build no worse than that one? Each round runs BullMQ's `add` once, then
# both builds' unary and streamed e2e (which build goes first alternates round by round, so
# that the machine's drift weighs on both alike), then both builds' synced invoke, each with
# the tonic+DashMap baseline in its own run. Medians and ratios at the end.
#
# usage: bench/beside.sh REV [ROUNDS]     (default 5)
#   REV: a git revision; it is built once into target/beside/<commit>, through a temporary
#        worktree, with the same release profile. Its `sai bench` must take the same flags
#        (every build since `sai bench e2e --invoke-stream` and `--out` does).
# env:   SAI=path/to/sai (this checkout's, default target/release/sai, built when missing),
#        N=40000 (invocations per sai run), PEER_N=20000 (BullMQ's jobs per run)
set -euo pipefail
REV=${1:?usage: bench/beside.sh REV [ROUNDS]}
ROUNDS=${2:-5}
# shellcheck source=bench/hot-path-common.sh
. "$(dirname "$0")/hot-path-common.sh"

COMMIT=$(git -C "$ROOT" rev-parse --verify "$REV^{commit}")
OTHER=$ROOT/target/beside/$COMMIT/release/sai
if [ ! -x "$OTHER" ]; then
  TREE=$(mktemp -d /tmp/sai-beside-tree.XXXXXX)
  # The worktree goes whether the build succeeds, fails or is interrupted.
  trap 'git -C "$ROOT" worktree remove --force "$TREE"; rm -rf "$OUT"' EXIT
  git -C "$ROOT" worktree add --detach "$TREE" "$COMMIT" >/dev/null
  CARGO_TARGET_DIR=$ROOT/target/beside/$COMMIT cargo build --release \
    --manifest-path "$TREE/Cargo.toml"
  git -C "$ROOT" worktree remove --force "$TREE"
  trap 'rm -rf "$OUT"' EXIT
fi

echo "this build: $SAI ($(git -C "$ROOT" rev-parse --short HEAD)); beside: $OTHER (${COMMIT:0:7})"

binary() { if [ "$1" = this ]; then echo "$SAI"; else echo "$OTHER"; fi; }
for round in $(seq 1 "$ROUNDS"); do
  bullmq_run add "$OUT/bullmq-$round.json"
  if [ $((round % 2)) -eq 1 ]; then order="this other"; else order="other this"; fi
  for shape in unary streamed; do
    flags=""
    if [ "$shape" = streamed ]; then flags="--invoke-stream"; fi
    for build in $order; do
      # shellcheck disable=SC2086
      "$(binary "$build")" bench --runs 1 e2e --invocations "$N" $flags \
        --out "$OUT/$build-$shape-$round" >/dev/null
    done
  done
  for build in $order; do
    "$(binary "$build")" bench --runs 1 invoke --modes sync --out "$OUT/$build-invoke-$round" \
      >/dev/null
  done
  echo "round $round done"
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(path):
    with open(path) as f:
        return json.load(f)
bull = [load(f"{out}/bullmq-{r}.json")["e2e_rate"] for r in range(1, rounds + 1)]
print(f"\nBullMQ add: median {statistics.median(bull):.0f}/s ({' '.join(f'{b:.0f}' for b in bull)})")
print("shape     build   sai e2e/s  ratio to BullMQ  (per round)")
for shape in ("unary", "streamed"):
    for build in ("this", "other"):
        rates = [load(f"{out}/{build}-{shape}-{r}/e2e.json")["rows"][0]["completed/s"]
                 for r in range(1, rounds + 1)]
        ratios = [s / b for s, b in zip(rates, bull)]
        print(f"{shape:9} {build:6} {statistics.median(rates):10.0f}  "
              f"{statistics.median(ratios):5.2f}x  ({' '.join(f'{x:.2f}x' for x in ratios)})")
for build in ("this", "other"):
    shares = []
    for r in range(1, rounds + 1):
        rows = {row["server"]: row for row in load(f"{out}/{build}-invoke-{r}/invoke.json")["rows"]}
        shares.append(next(row for name, row in rows.items() if name != "baseline")["% of baseline"])
    print(f"synced invoke {build:6}: {statistics.median(shares):.1f}% of the baseline "
          f"({' '.join(f'{s:.0f}%' for s in shares)})")
PY
