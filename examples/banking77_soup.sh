#!/usr/bin/env bash
# A greedy model soup for Banking77 (Wortsman et al. 2022): the recipe trained once per seed, all seeds at once
# on one GPU (a run peaks at ~8.4 GiB: five fit on an 80 GB H100), then averaged into one model of the same
# size, keeping a seed only where the validation accuracy does not drop. Nothing here reads the test set's
# labels: evaluate the soup afterwards with the command printed at the end.
#
#   examples/banking77_soup.sh                                   # seeds 42 1 2 3 4, examples/banking77.yaml
#   CFG=my.yaml SEEDS="1 2 3" NAME=mine examples/banking77_soup.sh
#
# Every seed trains on the same split (data.split.seed=SPLIT_SEED), so no seed has trained on the validation
# rows that greedy selection scores (`tunewise soup` refuses a run that has).
set -euo pipefail
cd "$(dirname "$0")/.."

CFG=${CFG:-examples/banking77.yaml}
SEEDS=${SEEDS:-"42 1 2 3 4"}
NAME=${NAME:-banking77}
SPLIT_SEED=${SPLIT_SEED:-42}
OUTPUT_DIR=${OUTPUT_DIR:-runs}
PYTHON=${PYTHON:-python3}
LOGS=${LOGS:-/tmp}
# Five runs share 16 cores: without a cap each would start a thread per core.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
tw() { "$PYTHON" -m tunewise.cli "$@"; }
common=(--set "data.split.seed=$SPLIT_SEED" --set "output_dir=$OUTPUT_DIR")

# Once, before the parallel runs: it converts the embedded model into the cache (parallel runs would race
# to write it) and prints the memory estimate of one run.
tw estimate "$CFG"

pids=() runs=() logs=()
for s in $SEEDS; do
  run="$OUTPUT_DIR/$NAME-s$s" log="$LOGS/soup-s$s.log"
  echo "training seed $s → $run (log: $log)"
  tw train "$CFG" --set "seed=$s" --set "name=$NAME-s$s" "${common[@]}" >"$log" 2>&1 &
  pids+=("$!") runs+=("$run") logs+=("$log")
done

failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "training failed: ${runs[$i]} (see the last lines of its log below)" >&2
    tail -n 5 "${logs[$i]}" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || { echo "no soup: a seed did not finish (fix it, or rerun with SEEDS= the ones that did)" >&2; exit 1; }

tw soup "$CFG" "${runs[@]}" --greedy --force --set "name=$NAME-soup" "${common[@]}" \
  --out "$OUTPUT_DIR/$NAME-soup/model"

echo "evaluate on the test set (baselines, fine-tuned soup, report) with:"
echo "  $PYTHON -m tunewise.cli eval $CFG --set name=$NAME-soup --set data.split.seed=$SPLIT_SEED --set output_dir=$OUTPUT_DIR"
