"""LoRA linear layers as one autograd function: y = x W^T + s (x A^T) B^T with the scale and the add folded
into the matrix product (addmm), and the adapter input neither copied nor upcast.

Why by hand: PEFT's lora.Linear upcasts the input to the adapter's fp32 dtype (a new [tokens, in] copy per
adapted layer, kept for backward), multiplies by the scale and adds the result as separate passes over
[tokens, out]. For Llama-3-8B that is ~1 MB of extra memory traffic per token and layer in forward and again
in backward (bench/train_speed_notes.md has the arithmetic); no library offers a drop-in replacement
that keeps PEFT's modules, saving and loading. Here the adapter runs in the base layer's compute dtype
(bf16 under autocast, as transformers' Trainer computes it anyway) with fp32 master weights and fp32
gradients."""

from __future__ import annotations

from types import MethodType

import torch
from torch import nn

from tunewise.train.fast.casts import cast, watch_optimizer_steps


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x_drop, weight, bias, lora_a, lora_b, scaling: float, casts: dict | None = None):
        dt = _compute_dtype(x)
        x2 = x.reshape(-1, x.shape[-1]).to(dt)
        xd2 = x2 if x_drop is None else x_drop.reshape(-1, x.shape[-1]).to(dt)
        w, a, b = weight.to(dt), cast(casts, "A", (lora_a,), dt), cast(casts, "B", (lora_b,), dt)
        with torch.autocast(x.device.type, enabled=False):
            xa = xd2 @ a.t()
            y = torch.nn.functional.linear(x2, w, None if bias is None else bias.to(dt))
            y.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(xd2, xa, w, a, b)
        ctx.scaling, ctx.dropped, ctx.in_shape = scaling, x_drop is not None, x.shape
        ctx.dtypes = (x.dtype, None if x_drop is None else x_drop.dtype, lora_a.dtype, lora_b.dtype)
        ctx.has_bias = bias is not None and ctx.needs_input_grad[3]
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, dy):
        xd2, xa, w, a, b = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1]).to(w.dtype)
        dxa = (dy2 @ b).mul_(ctx.scaling)  # [tokens, r]
        grad_b = (dy2.t() @ xa).mul_(ctx.scaling).to(ctx.dtypes[3]) if ctx.needs_input_grad[5] else None
        grad_a = (dxa.t() @ xd2).to(ctx.dtypes[2]) if ctx.needs_input_grad[4] else None
        grad_x = grad_xd = None
        if ctx.needs_input_grad[0]:
            grad_x = dy2 @ w
            if not ctx.dropped:
                grad_x.addmm_(dxa, a)  # the adapter's share of the input gradient, in the same pass
            grad_x = grad_x.view(ctx.in_shape).to(ctx.dtypes[0])
        if ctx.dropped and ctx.needs_input_grad[1]:
            grad_xd = (dxa @ a).view(ctx.in_shape).to(ctx.dtypes[1])
        grad_w = None  # the base weight is frozen (only LoRA layers with requires_grad=False are fused)
        grad_bias = dy2.sum(0) if ctx.has_bias else None
        return grad_x, grad_xd, grad_w, grad_bias, grad_a, grad_b, None, None


def _fusable(layer) -> str | None:
    """The adapter name when this layer is plain single-adapter LoRA over a frozen nn.Linear, else None."""
    active = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(active) != 1:
        return None
    name = active[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}) or layer.use_dora.get(name):
        return None
    if type(layer.base_layer) is not nn.Linear or layer.base_layer.weight.requires_grad:
        return None
    return name


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = None if (args or kwargs) else _fusable(self)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    dropout = self.lora_dropout[name]
    x_drop = dropout(x) if self.training and not isinstance(dropout, nn.Identity) and dropout.p > 0 else None
    base = self.base_layer
    casts = self.__dict__.setdefault("_tw_casts", {}) if self.training and torch.is_grad_enabled() else None
    return LoraLinear.apply(
        x,
        x_drop,
        base.weight,
        base.bias,
        self.lora_A[name].weight,
        self.lora_B[name].weight,
        float(self.scaling[name]),
        casts,
    )


def fuse_lora_layers(model) -> int:
    """Route every PEFT lora.Linear of `model` through LoraLinear (per instance; PEFT's own forward is the
    fallback whenever a layer is merged, disabled, DoRA, multi-adapter or quantised). Returns how many."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinearLayer
    except ImportError:
        return 0
    watch_optimizer_steps()
    count = 0
    for module in model.modules():
        if type(module) is LoraLinearLayer and _fusable(module) is not None:
            module.forward = MethodType(_fused_forward, module)
            count += 1
    return count
