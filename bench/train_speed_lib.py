"""What bench/train_speed.py measures: rows, tunewise variants ("sides"), model building and the timed loop.

Both sides share the loop (autocast bf16 as transformers' Trainer with bf16=True, AdamW, clip 1.0, no
accumulation) and the data (seeded random tokens); they differ only in how the model is prepared: plain
transformers + PEFT, or tunewise's apply_method + apply_fast_path (the code `tunewise train` runs)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import torch

from tunewise.train.fast.quiet_gc import frozen_gc

LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TINY_SCALE = 32  # --tiny divides sequence lengths by this


@dataclass(frozen=True)
class Row:
    label: str
    kind: str  # lora | qlora | maxctx | banking77
    seq: int = 2048
    batch: int = 1
    gc: bool = False
    sides: tuple[str, ...] = ("tunewise",)


ABLATION = ("t-none", "t-loss", "t-liger-loss", "t-kernels", "t-lora", "tunewise", "t-compile")
ROWS = {
    "lora-2048x4-gc": Row(
        "LoRA 8B 2048×4 GC on", "lora", 2048, 4, True, ("tunewise", "t-mb2-rc", "t-mb2")
    ),
    "lora-2048x2": Row("LoRA 8B 2048×2 GC off", "lora", 2048, 2, False),
    "lora-4096x1-gc": Row(
        "LoRA 8B 4096×1 GC on", "lora", 4096, 1, True, ("tunewise", "t-ckpt75", "t-ckpt56-rc")
    ),
    "ablate-2048x4-gc": Row("LoRA 8B 2048×4 GC on", "lora", 2048, 4, True, ABLATION),
    "ablate-2048x2": Row("LoRA 8B 2048×2 GC off", "lora", 2048, 2, False, ABLATION),
    "qlora-2048x1": Row("QLoRA 8B 2048×1 GC on", "qlora", 2048, 1, True),
    "maxctx": Row("LoRA 8B batch 1 GC on, longest context", "maxctx", 0, 1, True),
    "banking77": Row(
        "135M full FT, Banking77 (padded vs packed)",
        "banking77",
        128,
        32,
        False,
        ("tunewise", "t-packed", "t-packed-flex"),
    ),
}
OFF = {"loss": "off", "kernels": False, "fused_lora": False}
SIDES = {  # tunewise variants: train.fast overrides, plus packing / attention for the banking77 row
    "tunewise": {"fast": {}},
    "t-none": {"fast": OFF},  # the fast path with every component off: the noise floor against base
    "t-loss": {"fast": {**OFF, "loss": "chunked"}},
    "t-liger-loss": {"fast": {**OFF, "loss": "liger"}},
    "t-kernels": {"fast": {**OFF, "kernels": True}},
    "t-lora": {"fast": {**OFF, "fused_lora": True}},
    "t-ckpt75": {"fast": {"checkpoint_layers": 0.75}},
    "t-ckpt50": {"fast": {"checkpoint_layers": 0.5}},
    # 14 of 32 layers not recomputed, keeping recipes instead of their elementwise tensors (batch 1 cannot be
    # split into micro-batches): predicted ~22 GiB, under the 4096×1 baseline's 22.4.
    "t-ckpt56-rc": {"fast": {"checkpoint_layers": 0.5625, "recompute_elementwise": True}},
    # The device batch in micro-batches of 1 (accumulation, same examples per step) with no recompute.
    "t-mb1": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0}},
    "t-mb2": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0}},
    "t-mb2-rc": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True}},
    # t-mb2-rc without Liger's Triton kernels (torch's own ops): is their Python launch cost worth it here?
    "t-mb2-rc-nokern": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "kernels": False}
    },
    # t-mb2-rc with Liger's RMSNorm instead of torch's fused one (the default since the fifth session)
    "t-mb2-rc-ligernorm": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "rms_norm": "liger"}
    },
    "t-mb2-rc-flash": {  # FlashAttention-2 first instead of torch's default (cuDNN on the H100)
        "fast": {
            "micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "sdpa_backend": "flash"
        }
    },
    # t-mb2-rc one change at a time: without grouped q/k/v + gate/up LoRA, and also without the frozen GC.
    "t-mb2-rc-nogroup": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "grouped_lora": False}
    },
    "t-mb2-rc-nogroup-nofreeze": {
        "fast": {
            "micro_batch_size": 2,
            "checkpoint_layers": 0.0,
            "recompute_elementwise": True,
            "grouped_lora": False,
            "freeze_gc": False,
        }
    },
    "t-mb2-rc-ckpt9": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.09375, "recompute_elementwise": True}
    },
    "t-mb1-cudnn": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0, "sdpa_backend": "cudnn"}},
    "t-cudnn": {"fast": {"sdpa_backend": "cudnn"}},
    "t-mb1-compile": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0, "compile": True, "kernels": False}},
    "t-mb1-graphs": {
        "fast": {
            "micro_batch_size": 1,
            "checkpoint_layers": 0.0,
            "compile": True,
            "compile_mode": "reduce-overhead",
            "kernels": False,
        }
    },
    "t-mb2-ckpt25": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.25}},
    "t-ckpt69": {"fast": {"checkpoint_layers": 0.6875}},
    "t-mb2-ckpt28": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.28125}},
    "t-mb2-ckpt28-compile": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.28125, "compile": True, "kernels": False}
    },
    "t-mb1-compile-liger": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0, "compile": True}},
    "t-compile": {"fast": {"compile": True}},
    "t-packed": {"fast": {}, "packing": True},
    "t-packed-flex": {"fast": {}, "packing": True, "attn": "flex_attention"},
}


def _device() -> tuple[str, torch.dtype]:
    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def build_llama(shape: dict, seed: int, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM, LlamaConfig

    device, dtype = _device()
    torch.manual_seed(seed)
    with torch.device(device):  # random init straight on the GPU: seconds, not minutes on the CPU
        return AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=dtype, attn_implementation=attn)


def _train_cfg(side: str, method: str, gc: bool, dropout: float = 0.0):
    from tunewise.config import LoraConfig, TrainConfig

    fast = {"enabled": True, **SIDES[side]["fast"]} if side != "base" else {"enabled": False}
    return TrainConfig(
        method=method, lora=LoraConfig(r=16, alpha=32, dropout=dropout), gradient_checkpointing=gc, fast=fast
    )


def prepare(model, side: str, method: str, gc: bool, seed: int, dropout: float = 0.0, batch: int = 1):
    """base: plain transformers + PEFT as its docs show it; else tunewise's method + fast path. Both sides get
    the same LoRA dropout (--lora-dropout). Returns (model, description, micro-batch size or None, whether
    training runs with the GC frozen, as `tunewise train` does when the fast path says so)."""
    device, _ = _device()
    torch.manual_seed(seed + 1)  # identical adapter initialisation on both sides
    if side != "base":
        from tunewise.train.fast import apply_fast_path
        from tunewise.train.methods import apply_method

        cfg = _train_cfg(side, method, gc, dropout).model_copy(update={"batch_size": batch})
        model = apply_method(model, cfg)
        fast = apply_fast_path(model, cfg, device, log=False)
        return model, fast.describe(), fast.micro_batch_size, fast.freeze_gc
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model.config.use_cache = False
    ckpt = {"use_reentrant": False}
    if method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs=ckpt
        )
    elif gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt)
    if method != "full":
        model = get_peft_model(
            model,
            LoraConfig(
                r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM"
            ),
        )
    return model, "plain transformers + PEFT", None, False


def flops_per_token(shape: dict, seq: int, full: bool, r: int = 16) -> float:
    """Model FLOPs per trained token, no recompute: matmuls 2·params forward, 2·params input gradients, and
    2·params weight gradients only when the weights train; causal attention 2·seq·hidden per layer forward."""
    h, i, n, v = (
        shape["hidden_size"],
        shape["intermediate_size"],
        shape["num_hidden_layers"],
        shape["vocab_size"],
    )
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    per_layer = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    linear = n * sum(a * b for a, b in per_layer) + v * h
    attention = 2 * seq * h * n
    if full:
        return 6 * linear + 3 * attention
    lora = n * sum(6 * r * (a + b) for a, b in per_layer)
    return 4 * linear + 3 * attention + lora


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _forward_backward(model, batch: dict, micro: int | None, device: str) -> torch.Tensor:
    """One optimizer step's loss and gradients. With `micro`, the batch runs as micro-batches whose losses are
    summed over the whole batch's label count, as transformers' Trainer does under gradient accumulation
    (num_items_in_batch): the same loss and gradients as the batch in one piece."""
    parts = [batch] if micro is None else [
        {k: v[i : i + micro] for k, v in batch.items()} for i in range(0, len(batch["input_ids"]), micro)
    ]
    items = (batch["labels"][:, 1:] != -100).sum() if micro else None
    total = 0.0
    for part in parts:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**part, **({"num_items_in_batch": items} if micro else {})).loss
        loss.backward()
        total = total + loss.detach()
    return total


class PauseWatch:
    """What stalls the host between kernels, per timed step: Python's garbage collections (count and time)
    and the CUDA caching allocator's device allocations and retries."""

    def __init__(self, device: str):
        self.device, self.gc_s, self.gc_full = device, 0.0, 0
        self._t0, self._mark = 0.0, {}
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self._t0
            self.gc_full += info.get("generation") == 2

    def _alloc(self) -> dict:
        if self.device != "cuda":
            return {}
        stats = torch.cuda.memory_stats()
        return {k: stats.get(k, 0) for k in ("num_device_alloc", "num_alloc_retries")}

    def start(self) -> None:
        self.gc_s, self.gc_full, self._mark = 0.0, 0, self._alloc()

    def step(self) -> dict:
        now = self._alloc()
        out = {"gc_ms": round(1000 * self.gc_s, 2), "gc_full": self.gc_full}
        out.update({k: now[k] - self._mark.get(k, 0) for k in now})
        return out

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


def train_loop(model, batches: list[dict], warmup: int, tokens: list[int], micro: int | None = None,
               freeze_gc: bool = False) -> dict:
    """Time each optimizer step after `warmup` steps; loss, time, peak memory and host pauses per run."""
    device, _ = _device()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0, fused=device == "cuda")
    model.train()
    losses, times, pauses = [], [], []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    watch = PauseWatch(device)
    with frozen_gc(freeze_gc):  # as tunewise train does around trainer.train
        for step, batch in enumerate(batches):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            _sync(device)
            watch.start()
            start = time.perf_counter()
            loss = _forward_backward(model, batch, micro, device)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
                losses.append(loss.item())
                pauses.append(watch.step())
    watch.close()
    timed_tokens = sum(tokens[warmup:])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    reserved = torch.cuda.max_memory_reserved() / 2**30 if device == "cuda" else 0.0
    return {
        "tokens_per_s": timed_tokens / sum(times),
        "losses": losses,
        "step_s": times,
        "pauses": pauses,
        "peak_gib": round(peak, 2),
        "reserved_gib": round(reserved, 2),
    }


def random_batches(vocab: int, seq: int, batch: int, n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out


def _oom_safe(fn, *args) -> dict:
    try:
        return fn(*args)
    except torch.OutOfMemoryError as err:
        return {"error": f"OutOfMemoryError: {str(err).splitlines()[0][:160]}", "oom": True}


def measure(spec: dict) -> dict:
    from bench.train_speed_models import measure_banking77, quantized_8b

    row, side = ROWS[spec["row"]], spec["side"]
    if row.kind == "banking77":
        return _oom_safe(measure_banking77, spec, row, side)
    shape = TINY if spec["tiny"] else LLAMA3_8B
    seq = max(16, row.seq // TINY_SCALE) if spec["tiny"] else row.seq
    if row.kind == "qlora":
        model = quantized_8b(spec["tiny"], seed=0)
        if isinstance(model, dict):
            return model
    else:
        model = build_llama(shape, seed=0)
    model, described, micro, freeze = prepare(
        model, side, row.kind, row.gc, seed=0, dropout=spec.get("lora_dropout", 0.0), batch=row.batch
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
    return {**res, "path": described, "seq": seq, "batch": row.batch}


def probe_max_context(spec: dict) -> dict:
    """Binary search over multiples of 1024 (64 with --tiny) for the longest batch-1 sequence one LoRA
    training step fits at, on tunewise's fast path with checkpointing on every layer."""
    tiny, unit = spec["tiny"], 64 if spec["tiny"] else 1024
    shape = TINY if tiny else LLAMA3_8B
    lo, hi = (128, 1024) if tiny else (spec["lo"], spec["hi"])
    model, _, _, _ = prepare(build_llama(shape, seed=0), "tunewise", "lora", True, seed=0)
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


def profile_steps(model, batches: list[dict], micro: int | None) -> str:
    """torch.profiler over a few more steps: the kernels that take the GPU's time, most first (text table)."""
    from torch.profiler import ProfilerActivity, profile

    device, _ = _device()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            _forward_backward(model, batch, micro, device)
            model.zero_grad(set_to_none=True)
        _sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)


def device_is_cuda() -> bool:
    return torch.cuda.is_available()


def gpu_gaps(model, batches: list[dict], micro: int | None) -> dict:
    """Where the GPU waits for the host: a torch.profiler trace of a few steps (after the timed ones), the idle
    time between consecutive kernels, and for each gap the CPU op that launched the kernel ending it (late
    launches: the host was the bottleneck there). Totals, and the ops behind the most idle time."""
    import bisect
    import json as _json
    import os
    import tempfile
    from collections import defaultdict

    from torch.profiler import ProfilerActivity, profile

    device, _ = _device()
    if device != "cuda":
        return {"skipped": "no CUDA"}
    params = [p for p in model.parameters() if p.requires_grad]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            _sync(device)
            _forward_backward(model, batch, micro, device)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            model.zero_grad(set_to_none=True)
            _sync(device)
    with tempfile.TemporaryDirectory() as tmp:  # a trace of two 8B steps is hundreds of MB: not kept
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            events = _json.load(f)["traceEvents"]
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
