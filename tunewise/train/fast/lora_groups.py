"""LoRA projections that read the same input, computed as one group: q/k/v of an attention block, gate/up of
a SwiGLU MLP. The adapters' A matrices are stacked so their down-projection reads the input once (forward) and
their weight gradient reads it once (backward), and the input gradient of the whole group is one buffer that
every base weight and the stacked A add into, instead of one per projection that autograd then sums.

Why by hand: PEFT keeps one module per projection and no library fuses LoRA across sibling projections
while keeping PEFT's modules, names, saving and loading. Per Llama-3-8B layer at 4,096 tokens this saves ~6
passes over a [tokens, 4096] tensor and ~20 kernel launches per step (bench/train_speed_notes.md).

Only exact cases are grouped: single-adapter LoRA over frozen bias-free nn.Linear layers, no LoRA dropout
(each projection would draw its own mask), in training with gradients on. Anything else runs each projection
through its own forward, unchanged."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from tunewise.train.fast.casts import cast, watch_optimizer_steps
from tunewise.train.fast.lora import _compute_dtype, _fusable

ATTENTION = ("q_proj", "k_proj", "v_proj")
MLP = ("gate_proj", "up_proj")


class GroupedLora(torch.autograd.Function):
    """y_i = x W_i^T + s_i (x A_i^T) B_i^T for i in the group, with x A^T computed once for the stacked A."""

    @staticmethod
    def forward(ctx, x, casts: dict | None, scalings: tuple, ranks: tuple, *params):
        n = len(scalings)
        weights, adapters_a, adapters_b = params[:n], params[n : 2 * n], params[2 * n :]
        dt = _compute_dtype(x)
        x2 = x.reshape(-1, x.shape[-1]).to(dt)
        a = cast(casts, "A", adapters_a, dt)  # [sum r, in]: the stacked A matrices
        bs = [cast(casts, ("B", i), (p,), dt) for i, p in enumerate(adapters_b)]
        ws = [w.to(dt) for w in weights]
        outs = []
        with torch.autocast(x.device.type, enabled=False):
            xa = x2 @ a.t()  # [tokens, sum r]: one read of x for every adapter of the group
            start = 0
            for w, b, s, r in zip(ws, bs, scalings, ranks):
                y = x2 @ w.t()
                y.addmm_(xa[:, start : start + r], b.t(), alpha=s)
                outs.append(y.view(*x.shape[:-1], w.shape[0]))
                start += r
        ctx.save_for_backward(x2, xa, a, *ws, *bs)
        ctx.n, ctx.scalings, ctx.ranks, ctx.in_shape = n, scalings, ranks, x.shape
        ctx.dtypes = (x.dtype, [p.dtype for p in adapters_a], [p.dtype for p in adapters_b])
        return tuple(outs)

    @staticmethod
    def backward(ctx, *dys):
        n = ctx.n
        saved = ctx.saved_tensors
        x2, xa, a, ws, bs = saved[0], saved[1], saved[2], saved[3 : 3 + n], saved[3 + n :]
        tokens = x2.shape[0]
        dy2 = [None if dy is None else dy.reshape(tokens, -1).to(x2.dtype) for dy in dys]
        dxa_parts, grads_b = [], []
        for dy, b, xa_i, s, r, dtype in zip(dy2, bs, _split(xa, ctx.ranks), ctx.scalings, ctx.ranks, ctx.dtypes[2]):
            if dy is None:  # an output that did not reach the loss
                dxa_parts.append(xa.new_zeros(tokens, r))
                grads_b.append(None)
                continue
            dxa_parts.append((dy @ b).mul_(s))
            grads_b.append((dy.t() @ xa_i).mul_(s).to(dtype))
        dxa = torch.cat(dxa_parts, dim=1)  # [tokens, sum r]
        grads_a = [g.to(dtype) for g, dtype in zip(_split(dxa.t() @ x2, ctx.ranks, dim=0), ctx.dtypes[1])]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = dxa @ a  # every projection's share below lands in this one buffer
            for dy, w in zip(dy2, ws):
                if dy is not None:
                    grad_x.addmm_(dy, w)
            grad_x = grad_x.view(ctx.in_shape).to(ctx.dtypes[0])
        return (grad_x, None, None, None, *([None] * n), *grads_a, *grads_b)


def _split(t: torch.Tensor, sizes: tuple, dim: int = 1) -> list:
    return list(torch.split(t, list(sizes), dim=dim))


class LoraGroup:
    """The projections of one block. The first member called computes all of them; the others pick their
    output up when they are called with the very same input tensor (the order of calls does not matter)."""

    def __init__(self, layers: list):
        self.layers = layers
        self.pending: dict[int, torch.Tensor] = {}
        self.source: torch.Tensor | None = None
        self.casts: dict = {}  # the adapters in the compute dtype, per optimizer step (casts.py)

    def names(self) -> list | None:
        """The adapter name of each member when the whole group can run as one, else None."""
        names = [_fusable(layer) for layer in self.layers]
        if any(n is None for n in names):
            return None
        for layer, name in zip(self.layers, names):
            drop = layer.lora_dropout[name]
            if layer.base_layer.bias is not None or not (isinstance(drop, nn.Identity) or drop.p == 0):
                return None
        return names

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.source is x and index in self.pending:
            out = self.pending.pop(index)
            if not self.pending:
                self.source = None
            return out
        layer = self.layers[index]
        if not (layer.training and torch.is_grad_enabled()):
            return None
        names = self.names()
        if names is None:
            return None
        outs = GroupedLora.apply(
            x,
            self.casts,
            tuple(float(layer.scaling[n]) for layer, n in zip(self.layers, names)),
            tuple(layer.lora_A[n].weight.shape[0] for layer, n in zip(self.layers, names)),
            *(layer.base_layer.weight for layer in self.layers),
            *(layer.lora_A[n].weight for layer, n in zip(self.layers, names)),
            *(layer.lora_B[n].weight for layer, n in zip(self.layers, names)),
        )
        # The others' outputs wait here for their own call (a few lines later in the block's forward).
        self.pending = {i: o for i, o in enumerate(outs) if i != index}
        self.source = x
        return outs[index]


def _member_forward(group: LoraGroup, index: int, fallback, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    out = None if (args or kwargs) else group.output(index, x)
    return fallback(x, *args, **kwargs) if out is None else out


def group_lora_projections(blocks: list) -> int:
    """Group the q/k/v and gate/up LoRA projections of each block (attention or MLP module) that has them all
    as PEFT lora.Linear layers. Patches the members' forward per instance; returns how many groups."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinearLayer
    except ImportError:
        return 0
    watch_optimizer_steps()
    count = 0
    for block in blocks:
        for names in (ATTENTION, MLP):
            layers = [getattr(block, n, None) for n in names]
            if not all(type(layer) is LoraLinearLayer for layer in layers):
                continue
            group = LoraGroup(layers)
            if group.names() is None:
                continue
            for i, layer in enumerate(layers):
                # a partial, not a closure: copy.deepcopy of the model then copies the group with it
                layer.forward = partial(_member_forward, group, i, layer.forward)
            count += 1
    return count
