"""Keep recipes, not copies: the RMSNorm outputs and the SwiGLU (GeGLU for Gemma) product that LoRA layers
save for their weight gradients are recomputed in backward from tensors that stay saved anyway (the norm's
input, the gate and up projections), with the same kernel, so the values are bit-identical.

Why by hand: activation checkpointing recomputes whole layers (matmuls included, ~30 % more compute); torch's
selective checkpointing works inside checkpointed regions only. Here nothing else is recomputed. For
Llama-3-8B that drops 44 KB per token and layer (the two norm outputs, 8 KB each, and the 28 KB SwiGLU product)
of ~130 KB, for a few elementwise passes in backward. Layers that are checkpointed are left alone: their own
saved-tensor hooks must stay innermost."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch

from tunewise.train.fast.layers import gated_activation, torch_rms_norm

_RECIPE = object()
_OUTER_SAVED = object()
# The saved-tensor hooks (pack, unpack) that recipe contexts sit inside, innermost last (offload.py): torch uses
# the innermost hooks only, so a recipe context hands what it does not replace on to these.
OUTER: list = []


class RecomputeSaved(torch.autograd.graph.saved_tensors_hooks):
    """Inside this context, a tensor saved for backward that starts where `target` starts is stored as its view
    geometry; its first unpack recomputes `target` with `fn(*sources)` (no grad) and takes the view. Inside
    outer hooks (OUTER), the sources and every other saved tensor are stored through them."""

    def __init__(self, target: torch.Tensor, fn, sources: tuple = ()):
        # The closures must not capture `target` itself: that would keep the very tensor alive they replace.
        # Matched by first element's address (cheaper than asking for the storage: every tensor the block saves
        # passes through here): the savers this is for keep `target` reshaped, never offset, and `target` is
        # alive while the context is, so no other tensor can start at that address.
        start, dtype, cache = target.data_ptr(), target.dtype, {}
        outer = OUTER[-1] if OUTER else None
        kept = tuple(outer[0](s) for s in sources) if outer else sources

        def pack(t: torch.Tensor):
            if t.data_ptr() == start and t.dtype == dtype:
                return (_RECIPE, t.shape, t.stride(), t.storage_offset())
            return (_OUTER_SAVED, outer[1], outer[0](t)) if outer else t

        def unpack(packed):
            if not (isinstance(packed, tuple) and packed):
                return packed
            if packed[0] is _OUTER_SAVED:
                return packed[1](packed[2])
            if packed[0] is not _RECIPE:
                return packed
            if "value" not in cache:
                with torch.no_grad():
                    cache["value"] = fn(*(outer[1](k) for k in kept) if outer else kept)
            return cache["value"].as_strided(packed[1], packed[2], packed[3])

        super().__init__(pack, unpack)


def _silu_mul(gate: torch.Tensor, up: torch.Tensor, liger: bool) -> torch.Tensor:
    if liger:
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction  # optional

        return LigerSiLUMulFunction.apply(gate, up)
    return torch.nn.functional.silu(gate) * up


def _gelu_mul(gate: torch.Tensor, up: torch.Tensor, liger: bool) -> torch.Tensor:
    """GeGLU as Gemma's MLP computes it (gelu_pytorch_tanh), or as Liger's GeGLU MLP does."""
    if liger:
        from liger_kernel.ops.geglu import LigerGELUMulFunction  # optional

        return LigerGELUMulFunction.apply(gate, up)
    return torch.nn.functional.gelu(gate, approximate="tanh") * up


def act_mul(act: str, gate: torch.Tensor, up: torch.Tensor, liger: bool) -> torch.Tensor:
    return (_silu_mul if act == "silu" else _gelu_mul)(gate, up, liger)


# The recipes run in backward, where the host already limits the step (bench/train_speed/host_overhead.py): with Liger's
# kernels they call its kernel launchers directly, without the autograd Function around them (same kernels,
# same inputs, so the same bits).
def _act_mul_value(act: str, liger: bool, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    if liger and act == "silu":
        from liger_kernel.ops.swiglu import swiglu_forward  # optional

        return swiglu_forward(gate.contiguous(), up.contiguous())[2]
    if liger:
        from liger_kernel.ops.geglu import geglu_forward  # optional

        return geglu_forward(gate.contiguous(), up.contiguous())[2]
    return act_mul(act, gate, up, liger)


def _norm_value(norm, x: torch.Tensor) -> torch.Tensor:
    if getattr(norm, "_tw_torch_rms", False) and x.dtype == norm.weight.dtype:
        return torch_rms_norm(norm, x)
    if hasattr(norm, "casting_mode") and hasattr(norm, "offset"):  # set by Liger's patch of this norm
        from liger_kernel.ops.rms_norm import rms_norm_forward  # optional

        x = x.contiguous()
        out = rms_norm_forward(x, norm.weight, norm.variance_epsilon, norm.offset, norm.casting_mode,
                               getattr(norm, "row_mode", None))[0]
        return out.view(x.shape)
    return norm(x)


def _active(layer) -> bool:
    """Not for checkpointed layers (their hooks must stay innermost) nor in evaluation (nothing is saved)."""
    return layer.training and torch.is_grad_enabled() and not getattr(layer, "gradient_checkpointing", False)


def _norm_forward(norm, slot: str, layer, forward, x):
    out = forward(x)
    setattr(layer, slot, (x, out) if _active(layer) else None)
    return out


def _recipe_for(layer, slot: str, norm, x: torch.Tensor):
    """The context that stores the norm output `x` as a recipe, when `x` is what the norm just returned."""
    src = getattr(layer, slot, None)
    setattr(layer, slot, None)  # the references live on in the recipe only as long as the graph needs them
    if src is None or src[1] is not x:
        return nullcontext()
    return RecomputeSaved(x, partial(_norm_value, norm), (src[0],))


def _attn_forward(layer, forward, hidden_states, *args, **kwargs):
    with _recipe_for(layer, "_tw_norm1", layer.input_layernorm, hidden_states):
        return forward(hidden_states, *args, **kwargs)


def _mlp_norm(layer):
    """The norm whose output the MLP reads: Gemma's pre_feedforward_layernorm (its post_attention_layernorm
    normalises the attention output), else post_attention_layernorm."""
    return getattr(layer, "pre_feedforward_layernorm", None) or getattr(layer, "post_attention_layernorm", None)


def _mlp_forward(layer, act: str, liger: bool, x):
    mlp = layer.mlp
    with _recipe_for(layer, "_tw_norm2", _mlp_norm(layer), x):
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    h = act_mul(act, gate, up, liger)
    if not _active(layer):
        return mlp.down_proj(h)
    with RecomputeSaved(h, partial(_act_mul_value, act, liger), (gate, up)):
        return mlp.down_proj(h)


def layer_activation(layer) -> str | None:
    """The gated MLP's activation when the layer has the shape the recipes know, else None."""
    mlp, cfg = getattr(layer, "mlp", None), getattr(getattr(layer, "self_attn", None), "config", None)
    if mlp is None or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return None
    if not hasattr(layer, "input_layernorm") or _mlp_norm(layer) is None:
        return None
    return gated_activation(cfg)


def enable_recompute(layers: list, liger: bool) -> int:
    """Patch each supported decoder layer's norms, attention and MLP (per instance). Returns how many."""
    count = 0
    for layer in layers:
        act = layer_activation(layer)
        if act is None:
            continue
        for slot, norm in (("_tw_norm1", layer.input_layernorm), ("_tw_norm2", _mlp_norm(layer))):
            norm.forward = partial(_norm_forward, norm, slot, layer, norm.forward)
        layer.self_attn.forward = partial(_attn_forward, layer, layer.self_attn.forward)
        layer.mlp.forward = partial(_mlp_forward, layer, act, liger)
        count += 1
    return count
