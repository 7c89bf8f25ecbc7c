"""The timed loop both sides share, and how each side prepares its model.

Both sides share the loop (autocast bf16 as transformers' Trainer with bf16=True, AdamW, clip 1.0, no
accumulation) and the data (seeded random tokens); they differ only in how the model is prepared: plain
transformers + PEFT, or tunewise's apply_method + apply_fast_path (the code `tunewise train` runs)."""

from __future__ import annotations

import gc
import time

import torch

from bench.train_speed.rows import SIDES
from tunewise.train.fast import graph_steps
from tunewise.train.fast.quiet_gc import frozen_gc


def device_and_dtype() -> tuple[str, torch.dtype]:
    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def build_model(shape: dict, seed: int):
    """A random-weight CausalLM from config fields; shape["model_type"] (default llama) picks the family's
    config class, with transformers' default attention for it; prepare() sets each side's own (plain HF + PEFT:
    eager where SDPA is not exact, as for Gemma 2)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(shape)
    family = fields.pop("model_type", "llama")
    device, dtype = device_and_dtype()
    torch.manual_seed(seed)
    with torch.device(device):  # random init straight on the GPU: seconds, not minutes on the CPU
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **fields), dtype=dtype)




def _train_cfg(side: str, method: str, gc: bool, dropout: float = 0.0, budget_gib: float | None = None):
    from tunewise.config import LoraConfig, TrainConfig

    fast = {"enabled": True, **SIDES[side]["fast"]} if side != "base" else {"enabled": False}
    if budget_gib is not None and side != "base":
        fast["memory_budget_gib"] = budget_gib
    return TrainConfig(
        method=method, lora=LoraConfig(r=16, alpha=32, dropout=dropout), gradient_checkpointing=gc, fast=fast
    )


def prepare(model, side: str, method: str, gc: bool, seed: int, dropout: float = 0.0, batch: int = 1,
            seq: int | None = None, budget_gib: float | None = None):
    """base: plain transformers + PEFT as its docs show it; else tunewise's method + fast path. Both sides get
    the same LoRA dropout (--lora-dropout). Returns (model, description, micro-batch size or None, whether
    training runs with the GC frozen, as `tunewise train` does when the fast path says so). seq: the sequence
    length, which the automatic plan needs (as `tunewise train` passes its longest example). budget_gib:
    train.fast.memory_budget_gib for the automatic plan (the sides matched to another side's memory). A tunewise
    side runs the attention `tunewise train` picks on this device (model.attn_implementation auto), or its
    spec's "attn"; base keeps the model's (transformers' default), eager where SDPA is not exact (sdpa_exact)."""
    device, _ = device_and_dtype()
    torch.manual_seed(seed + 1)  # identical adapter initialisation on both sides
    if side != "base":
        from tunewise.train.fast import apply_fast_path
        from tunewise.train.methods import apply_method
        from tunewise.train.runtime import attention_implementation

        attn = SIDES[side].get("attn") or attention_implementation("auto", device, type(model))[0]
        model.set_attn_implementation(attn)
        cfg = _train_cfg(side, method, gc, dropout, budget_gib).model_copy(update={"batch_size": batch})
        model = apply_method(model, cfg)
        fast = apply_fast_path(model, cfg, device, log=False, seq_len=seq)
        return model, f"attention {attn}; {fast.describe()}", fast.micro_batch_size, fast.freeze_gc
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from tunewise.models import sdpa_exact

    if not sdpa_exact(model):  # Gemma 2 as HF trains it: eager (SDPA, where a release allows it, drops the cap)
        model.set_attn_implementation("eager")
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
    return model, f"plain transformers + PEFT, attention {model.config._attn_implementation}", None, False


def flops_per_token(shape: dict, seq: int, full: bool, r: int = 16) -> float:
    """Model FLOPs per trained token, no recompute: matmuls 2·params forward, 2·params input gradients, and
    2·params weight gradients only when the weights train; causal attention 2·seq·(query width) per layer
    forward (the query width is heads × head_dim: Gemma 2's is not the hidden size)."""
    h, i, n, v = (
        shape["hidden_size"],
        shape["intermediate_size"],
        shape["num_hidden_layers"],
        shape["vocab_size"],
    )
    head_dim = shape.get("head_dim") or h // shape["num_attention_heads"]
    q, kv = shape["num_attention_heads"] * head_dim, shape["num_key_value_heads"] * head_dim
    per_layer = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    linear = n * sum(a * b for a, b in per_layer) + v * h
    attention = 2 * seq * q * n
    if full:
        return 6 * linear + 3 * attention
    lora = n * sum(6 * r * (a + b) for a, b in per_layer)
    return 4 * linear + 3 * attention + lora


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def forward_backward(model, batch: dict, micro: int | None, device: str) -> torch.Tensor:
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
    device, _ = device_and_dtype()
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
            sync(device)
            watch.start()
            start = time.perf_counter()
            loss = forward_backward(model, batch, micro, device)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
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
        "graphs": graph_steps(model),  # micro-steps replayed / eager (graphs.py)
    }


def random_batches(vocab: int, seq: int, batch: int, n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        out.append({"input_ids": ids, "labels": ids.clone()})
    return out



def device_is_cuda() -> bool:
    return torch.cuda.is_available()
