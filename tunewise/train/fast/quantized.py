"""QLoRA's frozen 4-bit base weights on the fused LoRA path (lora.py, lora_groups.py): which layers are 4-bit
and the one function that turns their weight into a dense matrix.

Why: PEFT's 4-bit LoRA layer (peft.tuners.lora.bnb.Linear4bit) runs the base through bitsandbytes'
matmul_4bit (at training sizes: dequantise, then one GEMM), then clones the result and runs the adapter as
separate casts, dropout, two GEMMs, a scale and an add, several host launches per projection on a path the
host limits. The fused Function does what bitsandbytes does for the base (dequantise, GEMM; in backward
dequantise again for the input gradient) with the adapter folded into the same GEMM's epilogue, and, like
bitsandbytes, never keeps the dense weight: a Llama-3-8B layer's would be 0.4 GiB in bf16, 14 GiB for the model.

Only exact cases: the base is bitsandbytes' Linear4bit (or a subclass: LinearNF4, LinearFP4) whose weight
carries its quant_state. The wrapper is PEFT's lora.Linear or its bnb Linear4bit. Anything else keeps PEFT's
forward."""

from __future__ import annotations

import torch

# Base layer classes (module.qualname, any class in the type's MRO) whose weight is 4-bit with a quant_state.
FOUR_BIT_BASES = {"bitsandbytes.nn.modules.Linear4bit"}
# PEFT LoRA wrapper classes over such a base (peft.tuners.lora.bnb defines its class only when bitsandbytes
# imports, so it is recognised by name, without importing it).
FOUR_BIT_WRAPPERS = {"peft.tuners.lora.bnb.Linear4bit"}


def _names(cls: type) -> set:
    return {f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__}


def is_4bit_base(base) -> bool:
    """Whether `base` is a 4-bit linear layer whose weight dequantize() can expand."""
    weight = getattr(base, "weight", None)
    return getattr(weight, "quant_state", None) is not None and not FOUR_BIT_BASES.isdisjoint(_names(type(base)))


def is_4bit_wrapper(layer) -> bool:
    return f"{type(layer).__module__}.{type(layer).__qualname__}" in FOUR_BIT_WRAPPERS


def dequantize(weight: torch.Tensor) -> torch.Tensor:
    """The dense [out, in] matrix of a 4-bit weight (bitsandbytes Params4bit), in its quant_state's dtype: what
    bitsandbytes' own matmul_4bit multiplies by at training sizes. The only place the fused path dequantises
    (tests substitute it)."""
    from bitsandbytes.functional import dequantize_4bit  # heavy, and CUDA-only in practice

    return dequantize_4bit(weight.data, weight.quant_state)


def dense(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """dequantize(weight) in `dtype`."""
    w = dequantize(weight)
    return w if w.dtype == dtype else w.to(dtype)
