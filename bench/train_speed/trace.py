"""Diagnostics a measurement can add: the kernels that take the GPU's time (--profile) and the GPU's idle
gaps with the host ops that launched late (--gaps)."""

from __future__ import annotations

import bisect
import json
import os
import tempfile
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bench.train_speed.lib import device_and_dtype, forward_backward, sync


def profile_steps(model, batches: list[dict], micro: int | None) -> str:
    """torch.profiler over a few more steps: the kernels that take the GPU's time, most first (text table)."""
    device, _ = device_and_dtype()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            forward_backward(model, batch, micro, device)
            model.zero_grad(set_to_none=True)
        sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)


def gpu_gaps(model, batches: list[dict], micro: int | None) -> dict:
    """Where the GPU waits for the host: a torch.profiler trace of a few steps (after the timed ones), the idle
    time between consecutive kernels, and for each gap the CPU op that launched the kernel ending it (late
    launches: the host was the bottleneck there). Totals, and the ops behind the most idle time."""
    device, _ = device_and_dtype()
    if device != "cuda":
        return {"skipped": "no CUDA"}
    params = [p for p in model.parameters() if p.requires_grad]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            sync(device)
            forward_backward(model, batch, micro, device)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            model.zero_grad(set_to_none=True)
            sync(device)
    with tempfile.TemporaryDirectory() as tmp:  # a trace of two 8B steps is hundreds of MB: not kept
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            events = json.load(f)["traceEvents"]
    kernels = sorted((e["ts"], e["ts"] + e.get("dur", 0), e.get("args", {}).get("correlation"))
                     for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    launches = {e.get("args", {}).get("correlation"): (e["ts"], e.get("tid")) for e in events
                if e.get("cat") == "cuda_runtime"}
    per_tid = defaultdict(list)
    for e in events:
        if e.get("cat") in ("cpu_op", "user_annotation"):
            per_tid[e.get("tid")].append((e["ts"], e["ts"] + e.get("dur", 0), e["name"]))
    starts = {}
    for tid, lst in per_tid.items():
        lst.sort()
        starts[tid] = [op[0] for op in lst]

    def innermost(ts: float, tid) -> str:
        """The op with the latest start that still encloses ts on that thread (ops nest)."""
        lst = per_tid.get(tid, [])
        i = bisect.bisect_right(starts.get(tid, []), ts) - 1
        for j in range(i, max(-1, i - 2000), -1):
            if lst[j][1] >= ts:
                return lst[j][2]
        return "?"

    busy, gaps, by_op, by_thread = 0.0, [], defaultdict(float), defaultdict(float)
    last_end = kernels[0][0] if kernels else 0.0
    for start, end, corr in kernels:
        if start > last_end:
            gap = start - last_end
            launch = launches.get(corr)
            late = launch is not None and launch[0] > last_end  # launched after the GPU ran dry
            if gap < 50:
                name = "(gaps under 50 us)"
            else:
                name = innermost(launch[0], launch[1]) if late else "(queued, not late)"
            gaps.append((gap, name))
            by_op[name] += gap
            if late:
                by_thread[f"tid {launch[1]}"] += gap
        busy += max(0.0, end - max(start, last_end))
        last_end = max(last_end, end)
    span = (kernels[-1][1] - kernels[0][0]) if kernels else 0.0
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:25]
    return {
        "steps": len(batches),
        "span_ms": round(span / 1000, 1),
        "gpu_busy_ms": round(busy / 1000, 1),
        "idle_ms": round((span - busy) / 1000, 1),
        "gaps": len(gaps),
        "gaps_over_100us": sum(1 for g, _ in gaps if g > 100),
        "idle_by_launching_op_ms": {k: round(v / 1000, 2) for k, v in top},
        "late_idle_by_thread_ms": {k: round(v / 1000, 1) for k, v in by_thread.items()},
    }
