"""The fast path's automatic plan: how many examples per micro-step, how many decoder layers to checkpoint,
whether the others keep elementwise recipes and how many of those keep their saved tensors in host memory, chosen
from the model's shape, the device batch, the sequence length and the memory there is (train.fast.
micro_batch_size / checkpoint_layers / recompute_elementwise / offload_kept_layers "auto"; an explicit value is
kept and the rest chosen around it).

The rule: a plan never needs more predicted peak memory than plain transformers + PEFT on the same config (the
user's gradient_checkpointing, the device batch in one micro-step) nor more than the budget; among those that
fit, the one with the highest predicted tokens/s wins (ties: fewer checkpointed layers, then larger
micro-steps, then no recipes). Memory and time come from tunewise.models.estimate (lora_activation_bytes,
fast_lora_step_seconds), whose constants were fitted on bench/results/train_speed.md. Checkpointing stays off
when train.gradient_checkpointing is off. Pure arithmetic: no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tunewise.config import TrainConfig
from tunewise.models.estimate import (
    DEVICES,
    GIB,
    GRAPH_GRAD_BYTES,
    GRAPH_SHAPE_BYTES,
    OFFLOAD_STALL_SHARE,
    UNMEASURED_HOST_LINK_GBS,
    ModelShape,
    fast_lora_layer_bytes,
    fast_lora_layer_seconds,
    fast_lora_step_seconds,
    fixed_bytes,
    lora_activation_bytes,
    train_seconds,
    trainable_params,
)
from tunewise.models.prices import device_key

# Runs split into micro-steps peaked 0.27-0.34 GiB above the model (t-mb1, t-mb2, t-mb2-rc in
# bench/results/train_speed.md; unsplit rows are within 0.1 GiB): added to every split plan that runs eagerly, cause
# not found. Split plans replayed from graphs peaked -0.02 to +0.07 GiB from the model without it (four t-mb1-g
# runs, 2026-11-30): they add the graph's gradient copy (GRAPH_GRAD_BYTES) instead.
SPLIT_EXTRA_GIB = 0.3
# Of the memory there is, the share a plan may take: the allocator's cache and fragmentation need the rest.
BUDGET_SHARE = 0.9
# Of the host link's rate × the forward's time, the share offloaded layers' saved bytes may take (offload.py: what
# is still in flight at the forward's end is on the GPU at the peak), and the host memory they may pin (torch's
# pinned allocator rounds each block up to a power of two: up to twice the bytes).
LINK_SHARE = 0.8
PIN_FACTOR = 2


@dataclass(frozen=True)
class Plan:
    micro_batch_size: int  # examples per micro-step (the device batch: no split)
    batch_size: int
    checkpointed_layers: int
    layers: int
    recompute_elementwise: bool
    offloaded_layers: int  # kept layers whose saved tensors wait in pinned host memory (offload.py)
    peak_gib: float  # predicted
    plain_peak_gib: float  # predicted, plain transformers + PEFT on the same config
    budget_gib: float | None
    tokens_per_s: float  # predicted
    plain_tokens_per_s: float
    fits: bool  # within the plain peak and the budget
    considered: int  # plans compared

    @property
    def speedup(self) -> float:
        return self.tokens_per_s / self.plain_tokens_per_s

    @property
    def checkpoint_fraction(self) -> float:
        return self.checkpointed_layers / self.layers

    def describe(self) -> str:
        budget = f", budget {self.budget_gib:.1f} GiB" if self.budget_gib is not None else ""
        head = (f"auto plan: micro-batch {self.micro_batch_size} of {self.batch_size}, "
                f"{self.checkpointed_layers} of {self.layers} layers checkpointed"
                f"{f', {self.offloaded_layers} offloaded to host memory' if self.offloaded_layers else ''}, "
                f"elementwise recipes {'on' if self.recompute_elementwise else 'off'}; "
                f"predicted peak {self.peak_gib:.1f} GiB against "
                f"plain transformers + PEFT's {self.plain_peak_gib:.1f}{budget}, ~{self.speedup:.2f}x its tokens/s")
        if self.fits:
            return f"{head} (the fastest predicted of {self.considered} plans within both)"
        return f"{head} (none of {self.considered} plans fits both: the one with the least memory)"

    def to_json(self) -> dict:
        out = asdict(self)
        out["speedup"] = round(self.speedup, 3)
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def choose_plan(shape: ModelShape, *, batch_size: int, seq_len: int, gradient_checkpointing: bool, r: int = 16,
                dropout: float = 0.0, target_modules="all-linear", budget_gib: float | None = None,
                device: str = "H100", kernels: bool = True, loss_chunk_tokens: int | None = None,
                micro_batch_size: int | None = None, checkpoint_layers: float | None = None,
                recompute_elementwise: bool | None = None, shards: int = 1, attention: str | None = None,
                offload_layers: int | None = 0, host_gib: float | None = None,
                graphs_max_tokens: float = 0, graph_widths: tuple[int, ...] = ()) -> Plan:
    """The plan for LoRA on the fast path (see the module docstring). micro_batch_size, checkpoint_layers (a
    share of the layers) and recompute_elementwise, when given, are kept; None lets the plan choose.
    budget_gib: the most the predicted peak may be (None: no limit but plain's). kernels: Liger's kernels run;
    loss_chunk_tokens: the pure-torch chunked loss runs instead of Liger's (tunewise.train.fast.loss).
    attention: the implementation the fast path's model runs (None: transformers' default for it); plain
    transformers + PEFT, the cap, runs transformers' default (eager for Gemma 2). offload_layers: kept layers
    whose saved tensors go to pinned host memory (None: chosen, on devices with a measured host link, within
    LINK_SHARE of what the link moves during the forward and host_gib / PIN_FACTOR of host memory).
    graphs_max_tokens: the largest micro-step the decoder stack replays from CUDA graphs (0: never): a plan
    without offloaded layers whose micro-steps are no larger then adds the graph's copy of the adapter gradients to
    its peak and launches nothing per layer from the host. graph_widths: the batch widths besides seq_len that may
    get graphs of their own (bucket padding's): each keeps its buffers (GRAPH_SHAPE_BYTES) in a replayed plan."""
    fast_eager = shape.eager if attention is None else attention == "eager"
    spec = DEVICES[device_key(device, DEVICES) or "H100"]
    fixed = fixed_bytes(shape, "lora", r, target_modules, shards=shards)
    tokens = batch_size * seq_len
    plain_ckpt = shape.layers if gradient_checkpointing else 0
    plain_peak = (fixed + lora_activation_bytes(shape, tokens, fast=False, checkpointed=plain_ckpt,
                                                dropout=dropout, target_modules=target_modules,
                                                seq_len=seq_len)) / GIB
    plain_s = train_seconds(shape, "lora", tokens, tokens, seq_len, gradient_checkpointing,
                            spec["peak_tflops"] * spec["mfu"], target_modules=target_modules, dropout=dropout)
    cap = plain_peak if budget_gib is None else min(plain_peak, budget_gib)
    micros = [micro_batch_size] if micro_batch_size else [m for m in range(batch_size, 0, -1) if batch_size % m == 0]
    if checkpoint_layers is not None:
        ckpts = [round(checkpoint_layers * shape.layers)] if gradient_checkpointing else [0]
    else:
        ckpts = list(range(shape.layers + 1)) if gradient_checkpointing else [0]
    recipes = [recompute_elementwise] if recompute_elementwise is not None else [False, True]
    link = spec.get("host_link_gbs")
    graph_gib = trainable_params(shape, "lora", r, target_modules) * GRAPH_GRAD_BYTES / GIB
    scored = []
    for micro in micros:
        micro_tokens = micro * seq_len
        forward, backward = fast_lora_layer_seconds(shape, seq_len=seq_len, micro_tokens=micro_tokens, r=r,
                                                    target_modules=target_modules, peak_tflops=spec["peak_tflops"])
        # one kept layer's saved bytes in this micro-step, with recipes and without: what an offloaded layer moves
        moved = {rc: micro_tokens * fast_lora_layer_bytes(shape, target_modules, recipes=rc, kernels=kernels)
                 for rc in recipes}
        for ckpt in ckpts:
            for rc in recipes:
                if rc and ckpt == shape.layers and recompute_elementwise is None:
                    continue  # recipes are for layers that are not checkpointed: none here
                for off in _offload_choices(shape.layers, ckpt, moved[rc], offload_layers, link, forward, host_gib):
                    peak = (fixed + lora_activation_bytes(
                        shape, micro_tokens, fast=True, checkpointed=ckpt, recipes=rc, dropout=dropout,
                        target_modules=target_modules, kernels=kernels, loss_chunk_tokens=loss_chunk_tokens,
                        seq_len=seq_len, eager=fast_eager, flex=attention == "flex_attention",
                        offloaded=off)) / GIB
                    graphed = not off and micro_tokens <= graphs_max_tokens
                    shapes_gib = micro * sum(graph_widths) * GRAPH_SHAPE_BYTES * shape.hidden / GIB
                    peak += graph_gib + shapes_gib if graphed else SPLIT_EXTRA_GIB if micro < batch_size else 0.0
                    seconds = fast_lora_step_seconds(
                        shape, seq_len=seq_len, micro_tokens=micro_tokens, micro_steps=batch_size // micro,
                        checkpointed=ckpt, recipes=rc, dropout=dropout, r=r, target_modules=target_modules,
                        peak_tflops=spec["peak_tflops"], graphs=graphed)
                    if off:  # each offloaded layer's backward waits for the part of its fetch it cannot hide
                        wait = max(0.0, moved[rc] / ((link or UNMEASURED_HOST_LINK_GBS) * 1e9) - backward)
                        seconds += batch_size // micro * off * OFFLOAD_STALL_SHARE * wait
                    scored.append((peak, tokens / seconds, micro, ckpt, rc, off))
    fitting = [s for s in scored if s[0] <= cap]
    if fitting:
        peak, rate, micro, ckpt, rc, off = min(fitting, key=lambda s: (-round(s[1]), s[3], s[5], -s[2], s[4]))
    else:
        peak, rate, micro, ckpt, rc, off = min(scored, key=lambda s: (s[0], -s[1]))
    return Plan(micro, batch_size, ckpt, shape.layers, rc, off, peak, plain_peak, budget_gib, rate,
                tokens / plain_s, bool(fitting), len(scored))


def _offload_choices(layers: int, ckpt: int, layer: float, asked: int | None, link_gbs: float | None,
                     forward_s: float, host_gib: float | None) -> range | list[int]:
    """How many of the kept layers may offload, each moving `layer` bytes: `asked` when given (at most the kept
    layers), else from 0 up to what the host link moves in LINK_SHARE of the forward and the host can pin."""
    keep = layers - ckpt
    if asked is not None:
        return [min(asked, keep)]
    if not link_gbs or not keep:
        return [0]
    most = int(LINK_SHARE * link_gbs * 1e9 * layers * forward_s // layer)
    if host_gib is not None:
        most = min(most, int(host_gib * GIB / PIN_FACTOR // layer))
    return range(min(most, keep) + 1)


def plan_for(shape: ModelShape, train: TrainConfig, seq_len: int, *, budget_gib: float | None, device: str = "H100",
             kernels: bool = True, loss_chunk_tokens: int | None = None, shards: int = 1,
             attention: str | None = None, host_gib: float | None = None, graphs_max_tokens: float = 0,
             graph_widths: tuple[int, ...] = ()) -> Plan:
    """choose_plan for a training config: train.fast's explicit micro_batch_size (null: no split),
    checkpoint_layers, recompute_elementwise and offload_kept_layers are kept, "auto" ones chosen."""
    fast, lora = train.fast, train.lora
    micro = fast.micro_batch_size
    # recipes and offload stay off under fast.compile: dynamo does not trace their saved-tensor hooks
    recompute = False if fast.recompute_elementwise == "auto" and fast.compile else fast.recompute_elementwise
    offload = 0 if fast.offload_kept_layers == "auto" and fast.compile else fast.offload_kept_layers
    return choose_plan(
        shape, batch_size=train.batch_size, seq_len=seq_len, gradient_checkpointing=train.gradient_checkpointing,
        r=lora.r, dropout=lora.dropout, target_modules=lora.target_modules, budget_gib=budget_gib, device=device,
        kernels=kernels, loss_chunk_tokens=loss_chunk_tokens, shards=shards, attention=attention,
        micro_batch_size=None if micro == "auto" else min(micro or train.batch_size, train.batch_size),
        checkpoint_layers=None if fast.checkpoint_layers == "auto" else fast.checkpoint_layers,
        recompute_elementwise=None if recompute == "auto" else recompute, host_gib=host_gib,
        offload_layers=None if offload == "auto" else offload, graphs_max_tokens=graphs_max_tokens,
        graph_widths=graph_widths)


def planned(train: TrainConfig) -> bool:
    """Whether the automatic plan has anything to choose: LoRA, with one of its fields on auto."""
    fast = train.fast
    return train.method == "lora" and "auto" in (fast.micro_batch_size, fast.checkpoint_layers,
                                                 fast.recompute_elementwise, fast.offload_kept_layers)
