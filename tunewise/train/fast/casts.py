"""Adapter weights in the compute dtype, cast once per optimizer step instead of once per use.

Why: LoRA keeps fp32 master weights and computes in bf16, so every adapted projection casts its A and B each
forward (and the grouped projections also stack their A matrices): for Llama-3-8B, ~450 tiny kernels per
micro-step whose launches cost host time in a forward pass that is already limited by the host
(bench/results/train_speed.md). The weights only change when the optimizer steps, so one cast serves every
micro-step (and every checkpointed recompute) in between.

A cached cast is reused only while the parameter is provably unchanged: no optimizer step since (a global
optimizer step hook counts them: fused AdamW updates weights without bumping their version counter), the
same version counter (copy_, load_state_dict, in-place edits bump it) and the same storage. Only training
forwards with gradients on use the cache; evaluation casts afresh."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

_steps = [0]
_hooked = [False]
_bypass = [0]  # > 0 inside uncached(): a CUDA graph capture, whose casts must run in the graph on every replay


def _count_step(*_args, **_kwargs) -> None:
    _steps[0] += 1


def watch_optimizer_steps() -> None:
    """Register the global optimizer step hook once per process."""
    if not _hooked[0]:
        register_optimizer_step_post_hook(_count_step)
        _hooked[0] = True


def cast(cache: dict | None, slot, tensors: tuple, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """`tensors` concatenated along dim 0 (one tensor: itself), times `scale`, in `dtype`, from `cache[slot]`
    when still valid. cache None: no caching (evaluation, no grad, or the hook is not registered)."""
    if cache is None or not _hooked[0] or _bypass[0]:
        return _make(tensors, dtype, scale)
    key = (_steps[0], dtype, scale, tuple((t._version, t.data_ptr()) for t in tensors))
    hit = cache.get(slot)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = _make(tensors, dtype, scale)
    cache[slot] = (key, value)
    return value


@contextmanager
def uncached() -> Iterator[None]:
    """No cached cast is read or stored inside this context (graphs.py captures the casts themselves)."""
    _bypass[0] += 1
    try:
        yield
    finally:
        _bypass[0] -= 1


def _make(tensors: tuple, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    t = tensors[0].detach() if len(tensors) == 1 else torch.cat([t.detach() for t in tensors])
    if scale == 1.0:
        return t.to(dtype)
    # one kernel: the product is written straight in `dtype`
    return torch.mul(t, scale, out=torch.empty(t.shape, dtype=dtype, device=t.device))
