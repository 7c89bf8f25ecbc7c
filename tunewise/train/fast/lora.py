"""LoRA linear layers as one autograd function: y = x W^T + s (x A^T) B^T with the scale and the add folded
into the matrix product (addmm), and the adapter input neither copied nor upcast.

Why by hand: PEFT's lora.Linear upcasts the input to the adapter's fp32 dtype (a new [tokens, in] copy per
adapted layer, kept for backward), multiplies by the scale and adds the result as separate passes over
[tokens, out]. For Llama-3-8B that is ~1 MB of extra memory traffic per token and layer in forward and again
in backward (bench/results/train_speed.md has the arithmetic); no library offers a drop-in replacement
that keeps PEFT's modules, saving and loading. Here the adapter runs in the base layer's compute dtype
(bf16 under autocast, as transformers' Trainer computes it anyway) with fp32 master weights and fp32
gradients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import NamedTuple

import torch
from torch import nn

import tunewise.train.fast.quantized as quantized
from tunewise.train.fast.casts import cast, watch_optimizer_steps

# The adapters are cached per optimizer step as s·A and s·B (casts.py), so no product is scaled in a separate
# pass: with u = x A^T, y = x W^T + s u B^T is  x W^T + (1/s)(s u)(s B)^T  (addmm's alpha), dL/du = s dy B is
# dy (sB), dL/dB = s dy^T u is dy^T (s u), and the input gradient's dL/du A is (1/s) dL/du (sA). Each line
# below is then one GEMM, and the host, which limits this path (bench/train_speed/host_overhead.py), launches
# fewer kernels.

_OUT_DTYPE_MM = [None]  # whether torch.mm(..., out_dtype=) runs here (CUDA: bf16 in, fp32 out); None: untried


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the products with `x` run in: autocast's where it is on, else x's own."""
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


_ADDMM_INTO = [None]  # whether torch.addmm(g, a, b, out_dtype=, out=g) runs here; None: untried


def accumulate_mm(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """g += a @ b, in one GEMM where torch can (same dtype, or CUDA with an fp32 g and bf16 a, b)."""
    if a.dtype == g.dtype:
        g.addmm_(a, b)
        return
    if a.is_cuda and _ADDMM_INTO[0] is not False:
        try:
            torch.addmm(g, a, b, out_dtype=g.dtype, out=g)
            _ADDMM_INTO[0] = True
            return
        except (RuntimeError, TypeError):
            _ADDMM_INTO[0] = False
    g.add_(mm_grad(a, b, g.dtype))


def grad_nodes(params) -> tuple | None:
    """The AccumulateGrad nodes of trainable leaf `params` without gradient hooks, else None: their
    gradients may then be added into .grad by our own GEMMs (add_grad)."""
    if any(not p.requires_grad or p.grad_fn is not None or p._post_accumulate_grad_hooks or p._backward_hooks
           for p in params):
        return None
    with torch.enable_grad():
        return tuple(p.view_as(p).grad_fn.next_functions[0][0] for p in params)


def _accumulating(node) -> bool:
    """Whether this backward pass accumulates into the parameter of `node` (loss.backward(), yes;
    autograd.grad() and backward(inputs=...) without it, no), in a single process (DDP and FSDP hook into
    autograd's own accumulation)."""
    if node is None or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    try:
        return torch._C._will_engine_execute_node(node)
    except (RuntimeError, AttributeError):  # autograd.grad(): the gradient must be returned (or an old torch)
        return False


def accumulates_into(param: torch.Tensor, node) -> bool:
    """Whether our GEMMs may add this backward's gradient of `param` into param.grad themselves: autograd would
    accumulate it (_accumulating) and no gradient hook is there to see it first."""
    return _accumulating(node) and not (param._backward_hooks or param._post_accumulate_grad_hooks)


def add_grad(param: torch.Tensor, node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """The gradient a @ b of `param`. When this backward accumulates into param.grad, the GEMM writes or adds it
    there itself and None is returned: no gradient tensor, add kernel or AccumulateGrad call per micro-step
    (the host limits this path; Megatron-LM fuses gradient accumulation the same way). Else it is returned."""
    if not accumulates_into(param, node):
        return mm_grad(a, b, param.dtype)
    g = param.grad
    if g is None:
        r = mm_grad(a, b, param.dtype)
        param.grad = r if r.dtype == param.dtype else r.to(param.dtype)
    else:
        accumulate_mm(g, a, b)
    return None


def base_output(x2: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x2 W^T plus the base layer's bias, as one GEMM (the bias is addmm's input). `bias` is given in x2's
    dtype (the compute dtype, as the base layer under autocast would add it)."""
    return torch.mm(x2, w.t()) if bias is None else torch.addmm(bias, x2, w.t())


def dropout_generator(x: torch.Tensor) -> torch.Generator | None:
    """The generator torch.native_dropout draws x's mask from (its device's default one), or None on a device
    whose generator is not replayed here (fused layers then leave dropout to PEFT's forward)."""
    if x.is_cuda:
        return torch.cuda.default_generators[x.device.index]
    return torch.default_generator if x.is_cpu else None


def dropout_mask(x2: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x2 dropped out, its mask): the same RNG call nn.Dropout makes (at::dropout is native_dropout on CUDA;
    on the CPU both draw one bernoulli_ of x2's shape), so PEFT's masks under the same seed. On CUDA only where
    x2 has the dtype PEFT draws on: the kernel's vector width, which depends on the dtype, decides which random
    number lands on which element, and under bf16 autocast PEFT draws on its fp32 copy (seen on an H200)."""
    return torch.native_dropout(x2, p, True)


def rewind(generator: torch.Generator, state: torch.Tensor) -> torch.Tensor:
    """Set `generator` to `state`, a state it had in forward, so the masks drawn then are drawn again (as
    torch.utils.checkpoint replays a recompute); returns the state it had, to be set back right after."""
    now = generator.get_state()
    generator.set_state(state)
    return now


@contextmanager
def replaying(x: torch.Tensor, state: torch.Tensor) -> Iterator[None]:
    """Inside the block, the generator of x's device draws from `state` again (rewind); after it, the generator is
    where it was, so later draws see the stream as if backward drew nothing."""
    generator = dropout_generator(x)
    entry = rewind(generator, state)
    try:
        yield
    finally:
        generator.set_state(entry)


class LoraLinear(torch.autograd.Function):
    """With LoRA dropout p > 0 the adapter reads dropout(x). Neither the dropped copy nor the mask is kept: forward
    keeps the generator's state before the draw (a few bytes on the host), and backward draws the same mask again
    from it, from x, which the adapter keeps anyway (or a recipe stands for).

    four_bit: `weight` is a frozen 4-bit weight (quantized.py), dequantised for the forward GEMM and again for
    the input gradient, never kept in between (bitsandbytes' matmul_4bit does the same); the output is in x's
    dtype, as bitsandbytes returns it."""

    @staticmethod
    def forward(ctx, x, p: float, weight, bias, lora_a, lora_b, scaling: float, casts: dict | None = None,
                nodes: tuple | None = None, four_bit: bool = False):
        dt = compute_dtype(x)
        in_shape = x.shape
        x2 = x.reshape(-1, in_shape[-1])
        if x2.dtype != dt:
            x2 = x2.to(dt)
        ctx.rng = dropout_generator(x2).get_state() if p else None  # not a saved tensor: hooks never see it
        xd2 = dropout_mask(x2, p)[0] if p else x2
        if four_bit:
            w = quantized.dense(weight, dt)
        else:
            w = weight if weight.dtype == dt else weight.to(dt)
        sa, sb = cast(casts, "sA", (lora_a,), dt, scaling), cast(casts, "sB", (lora_b,), dt, scaling)
        # The inputs are all in the compute dtype already, so autocast has nothing to do here.
        xa = torch.mm(xd2, sa.t())  # s·u
        del xd2
        y = base_output(x2, w, None if bias is None else bias.to(dt))
        y.addmm_(xa, sb.t(), alpha=1.0 / scaling)
        out = y.view(*in_shape[:-1], w.shape[0])
        ctx.packed = weight if four_bit else None  # the 4-bit weight itself, not a saved (hooked) tensor
        ctx.save_for_backward(x2, xa, None if four_bit else w, sa, sb)
        ctx.scaling, ctx.p, ctx.in_shape = scaling, p, in_shape
        ctx.adapters, ctx.nodes = (lora_a, lora_b), nodes or (None, None)
        ctx.has_bias = bias is not None and ctx.needs_input_grad[3]
        return out if not four_bit or out.dtype == x.dtype else out.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x2, xa, w, sa, sb = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dy2 = dy.reshape(-1, dy.shape[-1])
        if dy2.dtype != x2.dtype:
            dy2 = dy2.to(x2.dtype)
        dxa = torch.mm(dy2, sb)  # dL/du, [tokens, r]
        (lora_a, lora_b), (node_a, node_b) = ctx.adapters, ctx.nodes
        grad_b = add_grad(lora_b, node_b, dy2.t(), xa) if needs[5] else None
        xd2, mask = x2, None
        if ctx.rng is not None and (needs[4] or needs[0]):
            with replaying(x2, ctx.rng):
                xd2, mask = dropout_mask(x2, ctx.p)  # forward's draw: the dropped input and its mask
        grad_a = add_grad(lora_a, node_a, dxa.t(), xd2) if needs[4] else None
        del xd2
        grad_x = None
        if needs[0]:
            grad_x = torch.mm(dy2, w if ctx.packed is None else quantized.dense(ctx.packed, x2.dtype))
            if mask is None:
                grad_x.addmm_(dxa, sa, alpha=1.0 / ctx.scaling)  # the adapter's share, in the same pass
            else:  # through dropout: the kept elements, scaled by 1/(1-p)
                grad_x.addcmul_(torch.mm(dxa, sa), mask, value=1.0 / (ctx.scaling * (1.0 - ctx.p)))
            grad_x = grad_x.view(ctx.in_shape)  # autograd casts it to the input's dtype if they differ
        grad_bias = dy2.sum(0) if ctx.has_bias else None
        return grad_x, None, None, grad_bias, grad_a, grad_b, None, None, None, None


def _dropout_p(module) -> float:
    return 0.0 if isinstance(module, nn.Identity) else float(module.p)


def _fusable(layer) -> str | None:
    """The adapter name when this layer is plain single-adapter LoRA over a frozen nn.Linear or 4-bit linear
    layer (quantized.py), else None."""
    active = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(active) != 1:
        return None
    name = active[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}) or layer.use_dora.get(name):
        return None
    base = layer.base_layer
    if not (type(base) is nn.Linear or quantized.is_4bit_base(base)) or base.weight.requires_grad:
        return None
    if type(layer.lora_dropout[name]) not in (nn.Identity, nn.Dropout):  # only the dropout drawn here is known
        return None
    return name


def adapter_state(layer) -> tuple:
    """What PEFT changes when adapters are switched, merged, disabled, rescaled or reloaded: a plan made for one
    state is reused while it holds (the full check, _fusable, costs host time on every call)."""
    active = layer.active_adapter
    names = (active,) if isinstance(active, str) else tuple(active)
    # the weights' identities too: load_state_dict(assign=True) puts new Parameters in place of the planned ones
    one = len(names) == 1 and names[0] in layer.lora_A
    weights = (id(layer.lora_A[names[0]].weight), id(layer.lora_B[names[0]].weight)) if one else ()
    return layer.disable_adapters, layer.merged, names, tuple(layer.scaling.items()), weights


class LoraPlan(NamedTuple):
    """What the fused forward of one fusable LoRA layer needs (a NamedTuple: read on every call, kept cheap)."""

    name: str  # the adapter's name
    weight: torch.Tensor  # the frozen base weight
    bias: torch.Tensor | None
    lora_a: torch.Tensor
    lora_b: torch.Tensor
    scaling: float
    dropout: float  # LoRA dropout probability (0: off)
    nodes: tuple | None  # the A/B gradient nodes (grad_nodes), None where our GEMMs may not accumulate
    four_bit: bool = False  # the base weight is 4-bit (quantized.py): dequantised on use, never kept


class Transient:
    """Holds a cached plan and the adapter state it was made for, on a module; a deep copy or pickle of the
    module gets an empty one (the plan holds autograd nodes of the original's parameters), and the copy builds
    its own on first use."""

    def __init__(self, state: tuple | None = None, plan=None):
        self.state, self.plan = state, plan

    def __deepcopy__(self, memo):
        return Transient()

    def __reduce__(self):
        return (Transient, ())


def lora_plan(layer) -> LoraPlan | None:
    """The plan of a fusable layer, else None; cached per adapter state."""
    state = adapter_state(layer)
    hit = layer.__dict__.get("_tw_plan")
    if hit is not None and hit.state == state:
        plan = hit.plan
        if plan is None or not plan.weight.requires_grad:  # a base weight unfrozen since: plan again (unfusable)
            return plan
    name = _fusable(layer)
    plan = None
    if name is not None:
        base, a, b = layer.base_layer, layer.lora_A[name].weight, layer.lora_B[name].weight
        plan = LoraPlan(name=name, weight=base.weight, bias=base.bias, lora_a=a, lora_b=b,
                        scaling=float(layer.scaling[name]), dropout=_dropout_p(layer.lora_dropout[name]),
                        nodes=grad_nodes((a, b)), four_bit=quantized.is_4bit_base(base))
    layer.__dict__["_tw_plan"] = Transient(state, plan)
    return plan


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    plan = None if (args or kwargs) else lora_plan(self)
    # 4-bit in evaluation: PEFT's forward, where bitsandbytes has its own kernels for a few tokens (generation)
    if plan is None or plan.scaling == 0 or (plan.four_bit and not self.training):
        return type(self).forward(self, x, *args, **kwargs)
    p = plan.dropout if self.training else 0.0
    if p and dropout_generator(x) is None:  # its masks could not be drawn again in backward: PEFT keeps them
        return type(self).forward(self, x)
    train = self.training and torch.is_grad_enabled()
    casts = self.__dict__.setdefault("_tw_casts", {}) if train else None
    return LoraLinear.apply(x, p, plan.weight, plan.bias, plan.lora_a, plan.lora_b, plan.scaling, casts,
                            plan.nodes if train else None, plan.four_bit)


def is_lora_linear(module, lora_linear: type) -> bool:
    """PEFT's lora.Linear (`lora_linear`, passed in: importing PEFT is heavy) or its 4-bit bitsandbytes layer."""
    return type(module) is lora_linear or quantized.is_4bit_wrapper(module)


def fused_4bit_layers(model) -> int:
    """How many of `model`'s fused LoRA layers (fuse_lora_layers) have a 4-bit base."""
    count = 0
    for module in model.modules():
        fwd = module.__dict__.get("forward")
        if getattr(fwd, "__func__", None) is _fused_forward and quantized.is_4bit_base(module.base_layer):
            count += 1
    return count


def fuse_lora_layers(model) -> int:
    """Route every PEFT lora.Linear and 4-bit LoRA layer of `model` through LoraLinear (per instance; PEFT's own
    forward is the fallback whenever a layer is merged, disabled, DoRA, multi-adapter or otherwise quantised).
    Returns how many."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinearLayer  # heavy
    except ImportError:
        return 0
    watch_optimizer_steps()
    count = 0
    for module in model.modules():
        if is_lora_linear(module, LoraLinearLayer) and _fusable(module) is not None:
            module.forward = MethodType(_fused_forward, module)
            count += 1
    return count
