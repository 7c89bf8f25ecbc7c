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

# The adapters are cached per optimizer step as s·A and s·B (casts.py), so no product is scaled in a separate
# pass: with u = x A^T, y = x W^T + s u B^T is  x W^T + (1/s)(s u)(s B)^T  (addmm's alpha), dL/du = s dy B is
# dy (sB), dL/dB = s dy^T u is dy^T (s u), and the input gradient's dL/du A is (1/s) dL/du (sA). Each line
# below is then one GEMM, and the host, which limits this path (bench/host_overhead.py), launches fewer kernels.

_OUT_DTYPE_MM = [None]  # whether torch.mm(..., out_dtype=) runs here (CUDA: bf16 in, fp32 out); None: untried


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def mm_grad(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """a @ b as the gradient of a `dtype` parameter: written in `dtype` by the GEMM itself where torch can
    (CUDA), else in the compute dtype, which autograd then casts (it casts every Function's input gradient
    to its input's dtype)."""
    if dtype != a.dtype and a.is_cuda and _OUT_DTYPE_MM[0] is not False:
        try:
            out = torch.mm(a, b, out_dtype=dtype)
            _OUT_DTYPE_MM[0] = True
            return out
        except (RuntimeError, TypeError):
            _OUT_DTYPE_MM[0] = False
    return torch.mm(a, b)


class LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x_drop, weight, bias, lora_a, lora_b, scaling: float, casts: dict | None = None):
        dt = _compute_dtype(x)
        in_shape = x.shape
        x2 = x.reshape(-1, in_shape[-1])
        if x2.dtype != dt:
            x2 = x2.to(dt)
        xd2 = x2 if x_drop is None else x_drop.reshape(-1, in_shape[-1]).to(dt)
        w = weight if weight.dtype == dt else weight.to(dt)
        sa, sb = cast(casts, "sA", (lora_a,), dt, scaling), cast(casts, "sB", (lora_b,), dt, scaling)
        # The inputs are all in the compute dtype already, so autocast has nothing to do here.
        xa = torch.mm(xd2, sa.t())  # s·u
        y = torch.mm(x2, w.t()) if bias is None else torch.addmm(bias.to(dt), x2, w.t())
        y.addmm_(xa, sb.t(), alpha=1.0 / scaling)
        ctx.save_for_backward(xd2, xa, w, sa, sb)
        ctx.scaling, ctx.dropped, ctx.in_shape = scaling, x_drop is not None, in_shape
        ctx.dtypes = (lora_a.dtype, lora_b.dtype)
        ctx.has_bias = bias is not None and ctx.needs_input_grad[3]
        return y.view(*in_shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, dy):
        xd2, xa, w, sa, sb = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dy2 = dy.reshape(-1, dy.shape[-1])
        if dy2.dtype != w.dtype:
            dy2 = dy2.to(w.dtype)
        dxa = torch.mm(dy2, sb)  # dL/du, [tokens, r]
        grad_b = mm_grad(dy2.t(), xa, ctx.dtypes[1]) if needs[5] else None
        grad_a = mm_grad(dxa.t(), xd2, ctx.dtypes[0]) if needs[4] else None
        grad_x = grad_xd = None
        if needs[0]:
            grad_x = torch.mm(dy2, w)
            if not ctx.dropped:
                grad_x.addmm_(dxa, sa, alpha=1.0 / ctx.scaling)  # the adapter's share, in the same pass
            grad_x = grad_x.view(ctx.in_shape)  # autograd casts it to the input's dtype if they differ
        if ctx.dropped and needs[1]:
            grad_xd = torch.mm(dxa, sa).mul_(1.0 / ctx.scaling).view(ctx.in_shape)
        grad_bias = dy2.sum(0) if ctx.has_bias else None
        return grad_x, grad_xd, None, grad_bias, grad_a, grad_b, None, None


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


def adapter_state(layer) -> tuple:
    """What PEFT changes when adapters are switched, merged, disabled or rescaled: a plan made for one state
    is reused while it holds (the full check, _fusable, costs host time on every call)."""
    active = layer.active_adapter
    return (layer.disable_adapters, layer.merged, active if isinstance(active, str) else tuple(active),
            tuple(layer.scaling.items()))


def lora_plan(layer) -> tuple | None:
    """(name, weight, bias, A, B, scaling, dropout or None) of a fusable layer, else None; cached per state."""
    state = adapter_state(layer)
    hit = layer.__dict__.get("_tw_plan")
    if hit is not None and hit[0] == state:
        return hit[1]
    name = _fusable(layer)
    plan = None
    if name is not None:
        base, dropout = layer.base_layer, layer.lora_dropout[name]
        drop = None if isinstance(dropout, nn.Identity) or dropout.p == 0 else dropout
        plan = (name, base.weight, base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight,
                float(layer.scaling[name]), drop)
    layer.__dict__["_tw_plan"] = (state, plan)
    return plan


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    plan = None if (args or kwargs) else lora_plan(self)
    if plan is None or plan[5] == 0:
        return type(self).forward(self, x, *args, **kwargs)
    _, weight, bias, lora_a, lora_b, scaling, dropout = plan
    train = self.training and torch.is_grad_enabled()
    x_drop = dropout(x) if dropout is not None and self.training else None
    casts = self.__dict__.setdefault("_tw_casts", {}) if train else None
    return LoraLinear.apply(x, x_drop, weight, bias, lora_a, lora_b, scaling, casts)


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
