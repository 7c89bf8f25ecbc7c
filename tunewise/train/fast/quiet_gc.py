"""Keep Python's cyclic garbage collector off the model during training.

Why: a full collection walks every tracked object, and an 8B model with PEFT adapters and Trainer state has
hundreds of thousands of them (modules, parameter dicts, hook closures). The fast path's saved-tensor hooks
(recompute.py) and grouped projections (lora_groups.py) create a few small objects per layer and micro-step
that survive into the old generation, so full collections come round every few steps and stall the CPU that
feeds the GPU: bench/results/train_speed.md has the step times. gc.freeze() moves everything alive at the start
of training into a permanent generation that collections skip; cycles made later are still collected."""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def frozen_gc(enabled: bool = True):
    """Collect once, then exempt every object alive now (the model, its adapters, the data) from later
    collections until the block ends, however it ends."""
    if not enabled:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
