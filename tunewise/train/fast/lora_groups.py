"""LoRA projections that read the same input, computed as one group: q/k/v of an attention block, gate/up of
a SwiGLU MLP. The adapters' A matrices are stacked so their down-projection reads the input once (forward) and
their weight gradient reads it once (backward), and the input gradient of the whole group is one buffer that
every base weight and the stacked A add into, instead of one per projection that autograd then sums.

Why by hand: PEFT keeps one module per projection and no library fuses LoRA across sibling projections
while keeping PEFT's modules, names, saving and loading. Per Llama-3-8B layer at 4,096 tokens this saves ~6
passes over a [tokens, 4096] tensor and ~20 kernel launches per step (bench/results/train_speed.md).

With LoRA dropout each member draws its own mask, in member order (q, k, v; gate, up: the order the block
calls them, so PEFT's masks under the same seed). The group keeps neither masks nor dropped copies: the input,
once for all of them, and the generator's state before the first draw, from which backward draws the same masks
again (lora.py).

QLoRA: over 4-bit base layers (quantized.py) each member's weight is dequantised for its GEMM and again for
its share of the input gradient, one at a time, and never kept.

Biases (Qwen2's q/k/v): a member's frozen base bias is added by its base GEMM, in the compute dtype, as the
per-projection path (lora.py) adds it; it gets no gradient.

Only exact cases are grouped: single-adapter LoRA over frozen nn.Linear layers (their biases frozen too), or
all over 4-bit ones, in training with gradients on. Anything else runs each projection through its own forward,
unchanged (a trainable bias keeps the per-projection path, which computes its gradient)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch

import tunewise.train.fast.quantized as quantized
from tunewise.train.fast.casts import cast, watch_optimizer_steps
from tunewise.train.fast.lora import (
    Transient,
    accumulate_mm,
    accumulates_into,
    adapter_state,
    add_grad,
    base_output,
    compute_dtype,
    dropout_generator,
    dropout_mask,
    grad_nodes,
    is_lora_linear,
    lora_plan,
    mm_grad,
    replaying,
)

ATTENTION = ("q_proj", "k_proj", "v_proj")
MLP = ("gate_proj", "up_proj")


class GroupPlan(NamedTuple):
    """GroupedLora's arguments for one group (a NamedTuple: read on every call, kept cheap)."""

    scaling: float  # the one scale every member shares
    ranks: tuple  # each member's LoRA rank, in member order
    nodes: tuple | None  # the A then B gradient nodes (grad_nodes), None where our GEMMs may not accumulate
    dropouts: tuple | None  # each member's LoRA dropout probability; None where every one is 0
    params: tuple  # the members' base weights, then their A, then their B matrices
    four_bit: bool = False  # the base weights are 4-bit (quantized.py): dequantised on use, never kept
    biases: tuple | None = None  # each member's frozen base bias (or None); None where no member has one


P = 8  # GroupedLora's arguments before *params (needs_input_grad's index of the first base weight)


class GroupedLora(torch.autograd.Function):
    """y_i = x W_i^T + b_i + s (x A_i^T) B_i^T for i in the group (one scale s), with x A^T computed once for the
    stacked A. Scales are folded into the cached adapters as in lora.py (s·A stacked, s·B per member).
    four_bit: the W_i are 4-bit, dequantised where used (outputs in x's dtype, as bitsandbytes returns them).
    biases: the frozen b_i (None: none), passed as a tuple, not as tensor arguments: they get no gradient."""

    @staticmethod
    def forward(ctx, x, casts: dict | None, scaling: float, ranks: tuple, nodes: tuple | None,
                dropouts: tuple | None, four_bit: bool, biases: tuple | None, *params):
        n = len(ranks)
        weights, adapters_a, adapters_b = params[:n], params[n : 2 * n], params[2 * n :]
        dt = compute_dtype(x)
        in_shape = x.shape
        x2 = x.reshape(-1, in_shape[-1])
        if x2.dtype != dt:
            x2 = x2.to(dt)
        sa = cast(casts, "sA", adapters_a, dt, scaling)  # [sum r, in]: the stacked s·A
        sbs = [cast(casts, i, (p,), dt, scaling) for i, p in enumerate(adapters_b)]
        ws = weights if four_bit else [w if w.dtype == dt else w.to(dt) for w in weights]
        # the biases in the compute dtype (lora.py's rule), cast once per optimizer step as the adapters are
        bs = [None if b is None else cast(casts, ("bias", i), (b,), dt) for i, b in enumerate(biases or (None,) * n)]
        if dropouts is None:
            xa, ctx.rng = torch.mm(x2, sa.t()), None  # [tokens, sum r] = s·u: one read of x for every adapter
        else:
            xa, ctx.rng = _dropped_down(x2, sa, ranks, dropouts)
        inv, lead, outs, start = 1.0 / scaling, in_shape[:-1], [], 0
        for w, b, sb, r in zip(ws, bs, sbs, ranks):
            if four_bit:
                w = quantized.dense(w, dt)  # one dense weight at a time, freed after its GEMM
            y = base_output(x2, w, b)
            y.addmm_(xa[:, start : start + r], sb.t(), alpha=inv)
            y = y.view(*lead, w.shape[0])
            outs.append(y.to(x.dtype) if four_bit and y.dtype != x.dtype else y)
            start += r
        del w
        ctx.packed = weights if four_bit else None  # the 4-bit weights themselves, not saved (hooked) tensors
        ctx.save_for_backward(x2, xa, sa, *(() if four_bit else ws), *sbs)
        ctx.n, ctx.scaling, ctx.ranks, ctx.in_shape, ctx.dropouts = n, scaling, ranks, in_shape, dropouts
        ctx.adapters, ctx.nodes = (adapters_a, adapters_b), nodes or (None,) * (2 * n)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *dys):
        n, ranks = ctx.n, ctx.ranks
        saved = ctx.saved_tensors
        k = 0 if ctx.packed is not None else n  # dense weights saved
        x2, xa, sa = saved[0], saved[1], saved[2]
        ws = saved[3 : 3 + k] if k else ctx.packed
        sbs = saved[3 + k : 3 + k + n]
        (adapters_a, adapters_b), nodes = ctx.adapters, ctx.nodes
        needs = ctx.needs_input_grad
        tokens = x2.shape[0]
        dxa = xa.new_empty(xa.shape)  # dL/du of every member, each written in place by its own GEMM
        grad_x, grads_b, start = None, [], 0
        for i, (dy, w, sb, r) in enumerate(zip(dys, ws, sbs, ranks)):
            part = dxa[:, start : start + r]
            start += r
            if dy is None:  # an output that did not reach the loss
                part.zero_()
                grads_b.append(None)
                continue
            dy2 = dy.reshape(tokens, -1)
            if dy2.dtype != x2.dtype:
                dy2 = dy2.to(x2.dtype)
            torch.mm(dy2, sb, out=part)
            b_needed = needs[P + 2 * n + i]
            grads_b.append(add_grad(adapters_b[i], nodes[n + i], dy2.t(), xa[:, start - r : start])
                           if b_needed else None)
            if needs[0]:  # every projection's share lands in this one buffer
                if ctx.packed is not None:
                    w = quantized.dense(w, x2.dtype)
                grad_x = torch.mm(dy2, w) if grad_x is None else grad_x.addmm_(dy2, w)
        a_needed = any(needs[P + n : P + 2 * n])
        if ctx.rng is None:
            grads_a = _stacked_grads(adapters_a, nodes[:n], dxa, x2, ranks) if a_needed else [None] * n
            if needs[0]:
                inv = 1.0 / ctx.scaling
                grad_x = torch.mm(dxa, sa).mul_(inv) if grad_x is None else grad_x.addmm_(dxa, sa, alpha=inv)
        else:
            grads_a, grad_x = _dropped_backward(ctx, x2, dxa, sa, nodes[:n], a_needed, grad_x)
        if needs[0]:
            grad_x = grad_x.view(ctx.in_shape)  # autograd casts it to the input's dtype if they differ
        return (grad_x, *([None] * (P - 1)), *([None] * n), *grads_a, *grads_b)


def _dropped_down(x2: torch.Tensor, sa: torch.Tensor, ranks: tuple, dropouts: tuple) -> tuple:
    """s·u of every member from its own dropped copy of x2, drawn in member order; returns (xa, the generator's
    state before the first draw). Each copy lives only for its GEMM, and its mask not even that long."""
    xa = x2.new_empty(x2.shape[0], sum(ranks))
    state, start = dropout_generator(x2).get_state(), 0
    for r, p in zip(ranks, dropouts):
        xd = dropout_mask(x2, p)[0] if p else x2
        torch.mm(xd, sa[start : start + r].t(), out=xa[:, start : start + r])
        start += r
    return xa, state


def _dropped_backward(ctx, x2, dxa, sa, nodes, a_needed: bool, grad_x):
    """Per member, with its mask drawn again (forward's draws, in forward's order, one member at a time): the A
    gradient from its dropped input and its share of the input gradient through dropout (mask · 1/(1-p))."""
    adapters_a, inv, grads_a, start = ctx.adapters[0], 1.0 / ctx.scaling, [], 0
    with replaying(x2, ctx.rng):
        for param, node, r, p in zip(adapters_a, nodes, ctx.ranks, ctx.dropouts):
            part, rows = dxa[:, start : start + r], sa[start : start + r]
            start += r
            # drawn even where unused, so that the next member's draw is forward's
            xd, mask = dropout_mask(x2, p) if p else (x2, None)
            if a_needed and ctx.needs_input_grad[P + ctx.n + len(grads_a)]:
                grads_a.append(add_grad(param, node, part.t(), xd))
            else:
                grads_a.append(None)
            del xd
            if not ctx.needs_input_grad[0]:
                continue
            if not p:
                grad_x = torch.mm(part, rows).mul_(inv) if grad_x is None else grad_x.addmm_(part, rows, alpha=inv)
            elif grad_x is None:
                grad_x = torch.mm(part, rows).mul_(mask).mul_(inv / (1.0 - p))
            else:
                grad_x.addcmul_(torch.mm(part, rows), mask, value=inv / (1.0 - p))
    return grads_a, grad_x


def _stacked_grads(params: tuple, nodes: tuple, dxa: torch.Tensor, x2: torch.Tensor, ranks: tuple) -> list:
    """Gradients of the stacked A matrices, one GEMM for all: dL/dA = dL/du^T x. When this backward accumulates
    into .grad, the members' .grad are consecutive row blocks of one buffer, added to by that same GEMM on
    later micro-steps (add_grad's reasoning); else the blocks are returned for autograd."""
    if not all(accumulates_into(p, node) for p, node in zip(params, nodes)):
        return list(mm_grad(dxa.t(), x2, params[0].dtype).split(list(ranks), 0))
    grads = [p.grad for p in params]
    base = grads[0]._base if grads[0] is not None else None
    if base is not None and base.dtype == params[0].dtype and base.shape[0] == sum(ranks) and all(
        g is not None and g._base is base and g.data_ptr() == base.data_ptr() + off * g.stride(0) * g.element_size()
        for g, off in zip(grads, _offsets(ranks))
    ):
        accumulate_mm(base, dxa.t(), x2)
        return [None] * len(params)
    if all(g is None for g in grads):
        stacked = mm_grad(dxa.t(), x2, params[0].dtype)
        if stacked.dtype != params[0].dtype:
            stacked = stacked.to(params[0].dtype)
        for p, block in zip(params, stacked.split(list(ranks), 0)):
            p.grad = block
        return [None] * len(params)
    for p, node, block in zip(params, nodes, dxa.t().split(list(ranks), 0)):  # mixed: one at a time
        add_grad(p, node, block, x2)
    return [None] * len(params)


def _offsets(ranks: tuple) -> list:
    out, start = [], 0
    for r in ranks:
        out.append(start)
        start += r
    return out


class LoraGroup:
    """The projections of one block. The first member called computes all of them; the others pick their
    output up when they are called with the very same input tensor (the order of calls does not matter)."""

    def __init__(self, layers: list):
        self.layers = layers
        self.pending: dict[int, torch.Tensor] = {}
        self.source: torch.Tensor | None = None
        self.casts: dict = {}  # the adapters in the compute dtype, per optimizer step (casts.py)
        self._plan = Transient()  # the group's plan (or None) for the members' adapter states

    def names(self) -> list | None:
        """The adapter name of each member when the whole group can run as one, else None."""
        plans = [lora_plan(layer) for layer in self.layers]
        if any(p is None or _trainable(p.bias) for p in plans) or len({p.four_bit for p in plans}) != 1:
            return None
        if len({p.scaling for p in plans}) != 1 or plans[0].scaling == 0:  # one nonzero scale for the group
            return None
        return [p.name for p in plans]

    def arguments(self) -> GroupPlan | None:
        """GroupedLora's arguments, or None when the group cannot run as one; recomputed only when a member's
        adapter state changes (cheap to compare, costly to rebuild on every call)."""
        state = tuple(adapter_state(layer) for layer in self.layers)
        if self._plan.state == state:
            args = self._plan.plan
            n = len(self.layers)
            if args is None or not any(w.requires_grad for w in args.params[:n]) and not any(
                    _trainable(b) for b in args.biases or ()):  # base weights and biases still frozen
                return args
        args = None
        if self.names() is not None:
            plans = [lora_plan(layer) for layer in self.layers]
            adapters = tuple(p.lora_a for p in plans) + tuple(p.lora_b for p in plans)
            dropouts, biases = tuple(p.dropout for p in plans), tuple(p.bias for p in plans)
            args = GroupPlan(scaling=plans[0].scaling, ranks=tuple(p.lora_a.shape[0] for p in plans),
                             nodes=grad_nodes(adapters), dropouts=dropouts if any(dropouts) else None,
                             params=tuple(p.weight for p in plans) + adapters, four_bit=plans[0].four_bit,
                             biases=None if all(b is None for b in biases) else biases)
        self._plan = Transient(state, args)
        return args

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.source is x and index in self.pending:
            out = self.pending.pop(index)
            if not self.pending:
                self.source = None
            return out
        layer = self.layers[index]
        if not (layer.training and torch.is_grad_enabled()):
            return None
        args = self.arguments()
        if args is None or args.dropouts is not None and dropout_generator(x) is None:
            return None
        outs = GroupedLora.apply(x, self.casts, args.scaling, args.ranks, args.nodes, args.dropouts, args.four_bit,
                                 args.biases, *args.params)
        # The others' outputs wait here for their own call (a few lines later in the block's forward).
        self.pending = {i: o for i, o in enumerate(outs) if i != index}
        self.source = x
        return outs[index]


def _trainable(bias: torch.Tensor | None) -> bool:
    return bias is not None and bias.requires_grad


def _member_forward(group: LoraGroup, index: int, fallback, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    out = None if (args or kwargs) else group.output(index, x)
    return fallback(x, *args, **kwargs) if out is None else out


def group_lora_projections(blocks: list) -> int:
    """Group the q/k/v and gate/up LoRA projections of each block (attention or MLP module) that has them all
    as PEFT lora.Linear (or 4-bit LoRA) layers. Patches the members' forward per instance; returns how many groups."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinearLayer  # heavy
    except ImportError:
        return 0
    watch_optimizer_steps()
    count = 0
    for block in blocks:
        for names in (ATTENTION, MLP):
            layers = [getattr(block, n, None) for n in names]
            if not all(layer is not None and is_lora_linear(layer, LoraLinearLayer) for layer in layers):
                continue
            group = LoraGroup(layers)
            if group.names() is None:
                continue
            for i, layer in enumerate(layers):
                # a partial, not a closure: copy.deepcopy of the model then copies the group with it
                layer.forward = partial(_member_forward, group, i, layer.forward)
            count += 1
    return count


def forget_plans(modules) -> None:
    """Drop the cached plans of these LoRA layers and of the groups they belong to, with the gradient nodes the
    plans hold: the next call plans again, for the parameters the layers hold then (graphs.py swaps them)."""
    for module in modules:
        module.__dict__.pop("_tw_plan", None)
        forward = module.__dict__.get("forward")
        if isinstance(forward, partial) and forward.func is _member_forward:
            forward.args[0]._plan = Transient()
