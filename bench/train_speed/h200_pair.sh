#!/usr/bin/env bash
# Two h200_job.sh streams at once on a two-GPU machine (device kind nvidia-h200-x2), one per GPU: the rows of
# one table take half the wall time. Each stream compares its sides with plain HF + PEFT on its own GPU, in its
# own processes, so no ratio mixes GPUs. Disk: only one stream may run Unsloth or QLoRA rows (they save ~16 GB
# of random weights under /tmp each).
#
# Wheels as for h200_job.sh (carried into /tmp/whl over a few calls), installed here once. Launch detached:
#   STREAM0="MAIN_ROW=lora-2048x4-gc FAM_ROWS= ..." STREAM1="MAIN_ROW= FAM_ROWS=qwen25-7b-2048x4-gc ..." \
#     setsid nohup bash bench/train_speed/h200_pair.sh >/dev/null 2>&1 </dev/null &
# STREAM0 / STREAM1: h200_job.sh's settings for GPU 0 / GPU 1 (name=value words). PRE_TEST: a command run first on
# GPU 0, before its stream (e.g. the CUDA parity tests), its output in $ROOT/pretest.log. Results: $ROOT/gpu0, $ROOT/gpu1; $ROOT/DONE
# at the end. Fetch: cp -r /tmp/train_speed_pair "$OUT/".
set -u
cd "$(dirname "$0")/../.."
ROOT=${ROOT:-/tmp/train_speed_pair}
WHL=${WHL:-/tmp/whl}
mkdir -p "$ROOT"
exec >>"$ROOT/pair.log" 2>&1
echo "== $(date -u +%FT%TZ) pair start; STREAM0: ${STREAM0:-}; STREAM1: ${STREAM1:-}"
if compgen -G "$WHL/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
    || echo "!! wheel install failed"
fi
for gpu in 0 1; do
  settings=STREAM$gpu
  (
    export CUDA_VISIBLE_DEVICES=$gpu RESULTS="$ROOT/gpu$gpu" SKIP_INSTALL=1
    if [ "$gpu" = 0 ] && [ -n "${PRE_TEST:-}" ]; then  # GPU 0 only; GPU 1's stream starts at once
      (export PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1; eval "$PRE_TEST") >"$ROOT/pretest.log" 2>&1
      echo "== pretest exit $?"
    fi
    # shellcheck disable=SC2163
    for kv in ${!settings:-}; do export "$kv"; done
    bash bench/train_speed/h200_job.sh
  ) &
done
wait
echo "== $(date -u +%FT%TZ) pair done"
date +%s >"$ROOT/DONE"
