"""One measurement, as the worker process of `python -m bench.train_speed` runs it: a row and side's timed
steps, or the longest context that fits."""

from __future__ import annotations

import time

import torch

from bench.train_speed.lib import build_model, device_is_cuda, flops_per_token, prepare, random_batches, train_loop
from bench.train_speed.models import measure_banking77, quantized_8b
from bench.train_speed.rows import LLAMA3_8B, ROWS, TINY, TINY_SCALE, shape_of
from bench.train_speed.sides_external import EXTERNAL_SIDES, measure_external
from bench.train_speed.trace import gpu_gaps, profile_steps


def _oom_safe(fn, *args) -> dict:
    try:
        return fn(*args)
    except torch.OutOfMemoryError as err:
        return {"error": f"OutOfMemoryError: {str(err).splitlines()[0][:160]}", "oom": True}


def measure(spec: dict) -> dict:
    row, side = ROWS[spec["row"]], spec["side"]
    if row.kind == "banking77":
        return _oom_safe(measure_banking77, spec, row, side)
    shape = shape_of(row, spec["tiny"])
    seq = max(16, row.seq // TINY_SCALE) if spec["tiny"] else row.seq
    if side in EXTERNAL_SIDES:  # hf-liger, unsloth: the same batches and loop, their own model preparation
        return measure_external(spec, row, shape, seq)
    if row.kind == "qlora":
        model = quantized_8b(spec["tiny"], seed=0)
        if isinstance(model, dict):
            return model
    else:
        model = build_model(shape, seed=0)
    model, described, micro, freeze = prepare(
        model, side, row.kind, row.gc, seed=0, dropout=spec.get("lora_dropout", 0.0), batch=row.batch, seq=seq,
        budget_gib=spec.get("memory_budget_gib"),
    )
    batches = random_batches(shape["vocab_size"], seq, row.batch, spec["warmup"] + spec["steps"], seed=1)
    res = _oom_safe(train_loop, model, batches, spec["warmup"], [seq * row.batch] * len(batches), micro, freeze)
    if spec.get("profile") and "error" not in res:
        res["profile"] = profile_steps(model, batches[:3], micro)
    if spec.get("gaps") and "error" not in res:
        try:
            res["gaps"] = gpu_gaps(model, batches[:2], micro)
        except Exception as err:  # a diagnostic: never lose the measurement for it
            res["gaps"] = {"error": repr(err)[:300]}
    if "tokens_per_s" in res:
        res["mfu"] = res["tokens_per_s"] * flops_per_token(shape, seq, False) / (spec["peak_tflops"] * 1e12)
    offload = getattr(getattr(model, "get_base_model", lambda: model)(), "_tw_offload", None)
    if offload is not None:  # train/fast/offload.py's counters over every step (warm-up included)
        res["offload"] = {"host_gb": offload.host_bytes / 1e9, "copies": offload.copies,
                          "fetch_waits": offload.fetch_waits, "late_gb": offload.late_bytes / 1e9}
    return {**res, "path": described, "seq": seq, "batch": row.batch}


def probe_max_context(spec: dict) -> dict:
    """Binary search over multiples of 1024 (64 with --tiny) for the longest batch-1 sequence one LoRA
    training step fits at, on tunewise's fast path with checkpointing on every layer."""
    tiny, unit = spec["tiny"], 64 if spec["tiny"] else 1024
    shape = TINY if tiny else LLAMA3_8B
    lo, hi = (128, 1024) if tiny else (spec["lo"], spec["hi"])
    model, _, _, _ = prepare(build_model(shape, seed=0), "tunewise", "lora", True, seed=0)
    start, tried = time.perf_counter(), {}

    def fits(seq: int) -> bool:
        batches = random_batches(shape["vocab_size"], seq, 1, 1, seed=seq)
        res = _oom_safe(train_loop, model, batches, 0, [seq])
        tried[seq] = res.get("peak_gib", "OOM") if "error" not in res else "OOM"
        print(f"probe seq {seq}: {tried[seq]} GiB, step {res.get('step_s', ['-'])[0]}", flush=True)
        if device_is_cuda():
            torch.cuda.empty_cache()
        return "error" not in res

    best, bad = (lo, None) if fits(lo) else (None, lo)
    left, right = (lo // unit, hi // unit + 1) if best else (1, lo // unit)
    while right - left > 1 and time.perf_counter() - start < spec["budget_s"]:
        mid = (left + right) // 2
        if fits(mid * unit):
            best, left = mid * unit, mid
        else:
            bad, right = mid * unit, mid
    return {
        "max_seq": best,
        "smallest_failing": bad,
        "probes": tried,
        "peak_gib": tried.get(best),
        "searched_s": round(time.perf_counter() - start),
        "complete": right - left <= 1,
    }
