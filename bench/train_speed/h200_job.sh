#!/usr/bin/env bash
# Issue 15's training-speed comparison in one job on the H200 machine: plain HF + PEFT, tunewise (defaults),
# HF + Liger and Unsloth on the Llama-3-8B row, the other families' rows, then QLoRA (plain, tunewise,
# Unsloth 4-bit). Each `python -m bench.train_speed` call measures its own bf16 GEMM rate first (MFU's
# denominator) and writes its table (.md) and JSONL (first record: GPU name, versions) under $RESULTS.
#
# Before it, carry the wheels (bench/train_speed/fetch_wheels.sh: .whl-bench/a, .whl-bench/b, ...) one
# group a call into /tmp/whl: carry [".whl-bench/a"], command "mkdir -p /tmp/whl && cp .whl-bench/a/*.whl /tmp/whl/".
# Launch from the repository root; it outlives the call and writes $RESULTS/job.log, then $RESULTS/DONE:
#   setsid nohup bash bench/train_speed/h200_job.sh >/dev/null 2>&1 </dev/null &
# Fetch later: cp -r /tmp/train_speed_job "$OUT/"
#
# Settings (environment): MAIN_ROW / FAM_ROWS / QLORA_ROW (empty: skipped), MAXCTX_ARGS (set: the
# qlora-maxctx row with these arguments), RESULTS, WHL (wheel folder), STEPS / WARMUP (timed / untimed steps per side),
# MAIN_SIDES, FAM_ROWS / FAM_SIDES (rows.py family rows; the issue compares them with plain HF), QLORA_SIDES, TIMEOUT (s per
# side), DROPOUT (every row at this LoRA dropout; empty: the shipped default), MAIN_REPEAT / REPEAT_SIDES (the main row
# again that many times with those sides: a range over runs), SKIP_INSTALL=1 (wheels already in /tmp/site: h200_pair.sh),
# PY (python), TINY=1 (toy model: a CPU check of the script), BUDGET_S: a call that would start after
# this many seconds is skipped and logged, so the job's GPU time stays near it (~12 minutes); a family row
# only starts while QLORA_RESERVE_S remain, so that the QLoRA row still runs.
# Measured on the H200 (2026-11-29, bench/results/train_speed/2026-11-29_h200_job*.log): the Llama row with
# tunewise, hf-liger and unsloth 280 s; a family row with tunewise 115-120 s (Gemma-2-9B 122 s); QLoRA 2048x1
# with tunewise 116 s; qlora-maxctx's 16k check plus one 32-layer step at 350,000 tokens 8 min (the step 402 s).
# The default BUDGET_S leaves the third family row out: give it 900 or run that row on its own.
set -u
cd "$(dirname "$0")/../.."
RESULTS=${RESULTS:-/tmp/train_speed_job}
WHL=${WHL:-/tmp/whl}
STEPS=${STEPS:-8}
WARMUP=${WARMUP:-3}
MAIN_ROW=${MAIN_ROW-lora-2048x4-gc}
MAIN_SIDES=${MAIN_SIDES:-tunewise,hf-liger,unsloth}
FAM_ROWS=${FAM_ROWS-qwen25-7b-2048x4-gc,mistral-7b-2048x4-gc,gemma2-9b-2048x4-gc}
FAM_SIDES=${FAM_SIDES-tunewise}  # empty: each row's own sides (Gemma 2: tunewise and t-eager)
QLORA_ROW=${QLORA_ROW-qlora-2048x1}
QLORA_SIDES=${QLORA_SIDES:-tunewise,unsloth}
TIMEOUT=${TIMEOUT:-420}
BUDGET_S=${BUDGET_S:-720}
QLORA_RESERVE_S=${QLORA_RESERVE_S:-240}
PY=${PY:-python3}
DROPOUT=${DROPOUT:-}  # set: every row at this LoRA dropout (--lora-dropout); empty: the shipped default
REPEAT_SIDES=${REPEAT_SIDES:-tunewise}  # the main row again, MAIN_REPEAT more times, with these sides
MAIN_REPEAT=${MAIN_REPEAT:-0}

mkdir -p "$RESULTS"
exec >>"$RESULTS/job.log" 2>&1
START=$(date +%s)
echo "== $(date -u +%FT%TZ) start in $PWD; steps $STEPS, warmup $WARMUP, budget ${BUDGET_S}s"
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv 2>/dev/null || echo "(no nvidia-smi)"

if [ -n "${SKIP_INSTALL:-}" ]; then
  echo "   wheels: installed into /tmp/site before this job (SKIP_INSTALL)"
elif compgen -G "$WHL/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl \
    || echo "!! wheel install failed: the sides that need them will say so"
else
  echo "!! no wheels in $WHL: hf-liger, unsloth and QLoRA will report what is missing"
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
"$PY" - <<'EOF'
import importlib.metadata as m
for n in ("torch", "transformers", "peft", "accelerate", "triton", "liger-kernel", "unsloth", "unsloth_zoo",
          "bitsandbytes", "trl", "datasets"):
    try:
        print(f"   {n} {m.version(n)}")
    except m.PackageNotFoundError:
        print(f"   {n} -")
EOF

n=0
bench() {  # bench NAME ROWS SIDES DEADLINE_S: skipped once DEADLINE_S seconds have gone
  local name=$1 rows=$2 sides=$3 deadline=$4 elapsed=$(($(date +%s) - START))
  n=$((n + 1))
  if [ "$elapsed" -ge "$deadline" ]; then
    echo "== skipped $n-$name (rows $rows, sides $sides): ${elapsed}s spent, its deadline ${deadline}s"
    return
  fi
  echo "== $(date -u +%T) ${elapsed}s: $n-$name: --rows $rows --sides $sides"
  "$PY" -m bench.train_speed ${TINY:+--tiny} --rows "$rows" ${sides:+--sides "$sides"} --steps "$STEPS" --warmup "$WARMUP" \
    --timeout "$TIMEOUT" ${DROPOUT:+--lora-dropout "$DROPOUT"} --out "$RESULTS/$n-$name.md" || echo "!! $n-$name exited $?"
}

[ -n "$MAIN_ROW" ] && bench "$MAIN_ROW" "$MAIN_ROW" "$MAIN_SIDES" "$BUDGET_S"
for _ in $(seq "$MAIN_REPEAT"); do  # repeats: the range over runs, not one run
  [ -n "$MAIN_ROW" ] && bench "$MAIN_ROW-repeat" "$MAIN_ROW" "$REPEAT_SIDES" "$BUDGET_S"
done
for row in ${FAM_ROWS//,/ }; do  # FAM_ROWS= (empty): none
  bench "$row" "$row" "$FAM_SIDES" $((BUDGET_S - QLORA_RESERVE_S))
  # another family's weights saved for Unsloth (~15-19 GB; disk is 64 GiB); only where this job saved them
  [[ $FAM_SIDES == *unsloth* ]] && rm -rf /tmp/tunewise-bench-saved-*
done
[ -n "$QLORA_ROW" ] && bench "$QLORA_ROW" "$QLORA_ROW" "$QLORA_SIDES" "$BUDGET_S"
if [ -n "${MAXCTX_ARGS-}" ]; then  # e.g. "--ctx-budget 0 --ctx-confirm 350000": the long-context row last
  n=$((n + 1))
  echo "== $(date -u +%T) $(($(date +%s) - START))s: $n-qlora-maxctx: $MAXCTX_ARGS"
  "$PY" -m bench.train_speed ${TINY:+--tiny} --rows qlora-maxctx $MAXCTX_ARGS --out "$RESULTS/$n-qlora-maxctx.md" \
    || echo "!! $n-qlora-maxctx exited $?"
fi

echo "== $(date -u +%T) done in $(($(date +%s) - START))s"
cat "$RESULTS"/*.md
echo "$(($(date +%s) - START))" >"$RESULTS/DONE"
