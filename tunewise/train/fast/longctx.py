"""Long context on one GPU: the checkpointed decoder layers keep their inputs in CPU memory, and the MLP runs a
tile of tokens at a time, so that what stays on the GPU per token is one layer's recompute, not 32 layers' inputs
plus [tokens, intermediate] tensors. Switched by train.fast.offload_activations and train.fast.tile_mlp_tokens.

- offload: each checkpointed layer's input goes to CPU memory when its forward saves it, and comes back when its
  backward recomputes it (a saved_tensors_hooks pair around the checkpoint call: the checkpoint's own hook, inside,
  takes every other tensor, so only the input is moved). Not pinned: torch's pinned host allocator rounds every
  block up to a power of two and caches it, so 32 inputs of 2.9 GB (350k tokens) would pin 32 × 4 GiB = the whole
  128 GiB host. Pageable copies are synchronous (~10-20 GB/s), ~0.3 s per layer each way at 350k tokens, against
  a ~10 s layer (attention at that length). An input is kept on the GPU when the host would drop below a reserve
  (min(8 GiB, 10 %) free): the step then runs out of GPU memory (an error torch reports) rather than the host
  out of RAM (a killed process).
- tiled MLP: gate/up/down (their LoRA layers included, fused or not) on `tile` tokens at a time, each tile a
  nested non-reentrant checkpoint, so forward, the layer's recompute and backward hold one tile's [tile, 14336]
  tensors; backward recomputes each tile once more (~+1 MLP forward, ~2 % of a step at 350k tokens).
- attention must stay O(N): batch 1 without padding reaches SDPA with no mask and is_causal (transformers'
  create_causal_mask returns None), so flash / cuDNN attention runs; a padded batch or packed rows would build a
  [N, N] mask. The loss never forms [N, vocab] (loss.py; Liger's fused loss is given slabs of 32k tokens, since
  its own chunk grows as tokens / 32).

Per-token GPU memory at peak, QLoRA Llama-3-8B (hidden 4096, kv 1024, bf16 activations, LoRA r=16 all linear,
dropout 0, Liger kernels, SDPA flash), offload on, 8192-token tiles, KB = 1024 B. The peak is one layer's
attention backward:
  the layer's recomputed saved tensors:  input 8 KB, norm1 out 8, q 8, k 2, v 2, attention out 8     = 36 KB
  gradient flowing through the residual 8, grad of the attention out 8, dq 8 + dk/dv 4               = 28 KB
  flash backward workspace: dq accumulator fp32 16, dk/dv expanded over the 4 query heads per kv 16  = 32 KB
                                                                                                    ~= 96 KB/token
  (the MLP backward before it: 36 + h_mid 8 + norm2 out 8 + grads 24 = 76 KB/token + one tile ~1.6 GB; forward:
  ~48 KB/token; the loss: ~32 KB/token + a [1024, vocab] chunk ~1 GB).
  LoRA dropout > 0 (e.g. 0.05; tunewise's default is 0) adds, per adapted attention projection, the dropped input
  copy and its mask that PEFT's 4-bit LoRA layer keeps, 12 KB: ~144 KB/token for q, k, v and o (fused LoRA keeps
  neither: backward draws the mask again).
Fixed: NF4 weights 3.6 GB, bf16 embedding + LM head 2.1 GB, LoRA weights/grads/AdamW 0.7 GB ~= 6 GiB, + ~1 GiB
of allocator slack. GPU memory alone, capped at 80 GiB: (80 - 7) GiB / 96 KB ~= 800k tokens.
The host holds 32 layers × 8 KB = 256 KB/token: 350k tokens = 85 GiB. With R GiB of host room (a 128 GiB host:
R ~= 100-110 after the process and the reserve), all inputs offload up to R / 256 KB tokens (~410k-450k); past
that, the last k layers' inputs stay on the GPU, k = 32 - floor(R / (8 KB × N)): at R = 100, 500k tokens keep 6
(23 GiB) beside 46 GiB of activations (fits, 76 GiB), 510k keep 7 (81 GiB, does not). Liger's kernels stop at
2^31 / 4096 = 524,288 tokens (32-bit row offsets). Predicted maximum under 80 GiB: ~505k-523k tokens with LoRA
dropout 0 (Unsloth's default), ~450k with 0.05 (at R = 100: 7 + 62 GiB + 3 layers' 10 GiB = 79 GiB). Without
offload and tiles the same model needs ~484 KB/token (measured on the H100 for LoRA: 128k tokens at 67 GiB)."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from tunewise.errors import ConfigError
from tunewise.train.distributed import local_world_size
from tunewise.train.fast.recompute import act_mul, layer_activation

LIGER_ELEMENTS = 2**31  # Liger's Triton kernels offset rows by row index × row stride in 32 bits
AUTO_TILE = 8192  # tokens per MLP tile under auto: [8192, 14336] × ~7 live tensors ~= 1.6 GB for Llama-3-8B
AUTO_SHARE = 0.25  # auto: long context when all layer inputs of a micro-batch exceed this share of GPU memory
HOST_RESERVE = 8 * 2**30  # host memory left free by the offload (or 10 % of the host when smaller)
_OFFLOADED = object()


_TOTAL: dict = {}  # device index → total memory (the per-process fraction is read per call: it can change)


def _usable_gpu_bytes(device: torch.device) -> int:
    """The memory this process may allocate on `device`: its total times the per-process fraction."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _TOTAL:
        _TOTAL[index] = torch.cuda.get_device_properties(index).total_memory
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    return int(_TOTAL[index] * (fraction(index) if fraction else 1.0))


def host_available() -> tuple[int, int] | None:
    """(available, total) host memory in bytes, or None where psutil cannot tell."""
    try:
        import psutil  # a dependency of accelerate, which PEFT needs
    except ImportError:
        return None
    mem = psutil.virtual_memory()
    return mem.available, mem.total


def host_spare() -> int | None:
    """Host bytes this process may still take, leaving HOST_RESERVE free (or 10 % of the host when smaller) and
    an equal share to every other process on the host (DDP ranks each offload their own); None where psutil
    cannot tell."""
    mem = host_available()
    if mem is None:
        return None
    available, total = mem
    return (available - min(HOST_RESERVE, total // 10)) // local_world_size()


class LongContext:
    """The settings and counters shared by one model's patched layers. `offload` (auto | True | False) and
    `tile` (auto | tokens | 0) are read on every call, so they can be switched between steps (the bench compares
    both paths on one loaded model)."""

    def __init__(self, offload, tile, layers: int, liger_rows: int = 0):
        self.offload, self.tile, self.layers = offload, tile, layers
        self.liger_rows = liger_rows  # most tokens one Liger SwiGLU call may take (0: no Liger)
        self.packed = self.kept = self.tiles = 0  # inputs moved to / kept off the host; MLP tiles run
        self.recomputing = 0  # > 0 while a layer's checkpoint recomputes its saved tensors
        self.host_bytes = 0  # bytes offloaded since the counters were last reset

    def reset_counters(self) -> None:
        self.packed = self.kept = self.tiles = self.host_bytes = 0

    def is_long(self, x: torch.Tensor) -> bool:
        """auto's test: CUDA, and every decoder layer's input at this size would fill over AUTO_SHARE of the GPU."""
        return x.is_cuda and self.layers * x.nbytes > AUTO_SHARE * _usable_gpu_bytes(x.device)

    def offloads(self, x: torch.Tensor) -> bool:
        return self.is_long(x) if self.offload == "auto" else bool(self.offload)

    def tile_for(self, x: torch.Tensor, training: bool) -> int:
        """Tokens per MLP tile for the input `x` [..., hidden], 0 when the MLP runs whole."""
        tokens = x.numel() // x.shape[-1]
        tile = ((AUTO_TILE if self.is_long(x) else 0) if self.tile == "auto" else self.tile) if training else 0
        if self.liger_rows and tokens > self.liger_rows and not 0 < tile <= self.liger_rows:
            tile = min(AUTO_TILE, self.liger_rows)  # tiles keep Liger's SwiGLU under 2^31 elements a call
        return tile if 0 < tile < tokens else 0

    def host_room(self, nbytes: int) -> bool:
        spare = host_spare()
        return spare is None or nbytes <= spare


def _pack(state: LongContext, t: torch.Tensor):
    if not state.host_room(t.nbytes):
        state.kept += 1
        return t
    host = torch.empty_like(t, device="cpu")  # pageable (see the module docstring)
    host.copy_(t)
    state.packed += 1
    state.host_bytes += t.nbytes
    return (_OFFLOADED, t.device, host)


def _unpack(packed):
    if isinstance(packed, tuple) and packed and packed[0] is _OFFLOADED:
        return packed[2].to(packed[1])
    return packed


class OffloadInputs(torch.autograd.graph.saved_tensors_hooks):
    """Around a checkpoint call: the tensors saved outside the checkpoint's own hook (its inputs) go to the host."""

    def __init__(self, state: LongContext):
        super().__init__(partial(_pack, state), _unpack)


class _Recomputing:
    """The recompute context of a layer's checkpoint (its context_fn's second manager): marks the state."""

    def __init__(self, state: LongContext):
        self.state = state

    def __enter__(self):
        self.state.recomputing += 1

    def __exit__(self, *exc):
        self.state.recomputing -= 1


def _contexts(state: LongContext):
    return nullcontext(), _Recomputing(state)


def _layer_checkpoint(state: LongContext, checkpoint_fn, non_reentrant: bool, marks: bool, function, *args,
                      **kwargs):
    """The decoder layer's checkpoint function (transformers calls it with the layer's positional inputs)."""
    if marks:
        kwargs.setdefault("context_fn", partial(_contexts, state))
    if args and torch.is_tensor(args[0]) and state.offloads(args[0]):
        x = args[0]
        if non_reentrant and x.is_leaf and x.requires_grad:
            # The embedding output that enable_input_require_grads marks (only reentrant checkpointing needs it):
            # autograd would hold this leaf on the GPU for the whole step and fill a [tokens, hidden] .grad nobody
            # reads.
            args = (x.detach(), *args[1:])
        with OffloadInputs(state):
            return checkpoint_fn(function, *args, **kwargs)
    return checkpoint_fn(function, *args, **kwargs)


def _gated_mlp(mlp, act: str, liger: bool, x: torch.Tensor) -> torch.Tensor:
    return mlp.down_proj(act_mul(act, mlp.gate_proj(x), mlp.up_proj(x), liger))


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _tiled_mlp_forward(layer, state: LongContext, forward, tile_fn, x: torch.Tensor) -> torch.Tensor:
    grad = torch.is_grad_enabled()
    tile = state.tile_for(x, layer.training and grad)
    if not tile:
        return forward(x)
    layer.__dict__.pop("_tw_norm2", None)  # recompute.py's recipe slot: the tiles do not use it, so drop the refs
    # split, not slicing: its backward concatenates the tiles' gradients once instead of one zero-padded
    # full-size gradient per tile
    parts = x.reshape(-1, x.shape[-1]).split(tile)
    if state.recomputing:
        # The layer's checkpoint is recomputing the tensors its forward saved; the tiles' inputs are the last of
        # them, so checkpoint's early stop ends the recompute at the last tile's input: no tile runs.
        for part in parts:
            checkpoint(_same, part, use_reentrant=False, preserve_rng_state=False)
        with torch.no_grad():  # reached only without early stop (or if the layer saves more after its MLP)
            outs = [tile_fn(part) for part in parts]
    elif grad:
        outs = [checkpoint(tile_fn, part, use_reentrant=False) for part in parts]
        state.tiles += len(outs)
    else:  # no gradients (evaluation past Liger's limit): nothing to recompute
        outs = [tile_fn(part) for part in parts]
    out = torch.cat(outs)
    return out.view(*x.shape[:-1], out.shape[-1])


def _refuse_liger_overflow(widest: int, module, args, kwargs) -> None:
    ids, embeds = kwargs.get("input_ids", args[0] if args else None), kwargs.get("inputs_embeds")
    tokens = embeds.shape[:-1].numel() if embeds is not None else ids.numel() if ids is not None else 0
    if tokens * widest >= LIGER_ELEMENTS:
        raise ConfigError(f"{tokens:,} tokens in one micro-batch make [tokens, {widest}] tensors of 2^31 elements or "
                          f"more, past the 32-bit offsets of Liger's RMSNorm / RoPE kernels: set "
                          f"train.fast.kernels: false for inputs of {LIGER_ELEMENTS // widest:,} tokens or more")


def enable_long_context(hf_model, layers: list, offload, tile, liger: bool) -> tuple[LongContext, int, int]:
    """Patch `layers` (per instance): checkpointed layers offload their inputs when `offload` says so, every MLP
    runs in tiles when `tile` says so (and, with Liger's kernels, whenever its gated-MLP kernel would get 2^31
    elements). Call after checkpointing (and recompute.py) are set up. Returns the shared state, how many layers
    may offload and how many MLPs may tile."""
    cfg = hf_model.config
    liger_rows = 0
    if liger:
        inter = getattr(cfg, "intermediate_size", 0)
        liger_rows = (LIGER_ELEMENTS - 1) // inter if inter and tile != 0 else 0
        heads = getattr(cfg, "num_attention_heads", 0) * (getattr(cfg, "head_dim", None) or 0)
        widest = max(cfg.hidden_size, heads, 0 if liger_rows or not inter else inter)
        hf_model.model.register_forward_pre_hook(partial(_refuse_liger_overflow, widest), with_kwargs=True)
    state = LongContext(offload, tile, len(layers), liger_rows)
    offloading = tiling = 0
    if offload is not False or tile != 0:
        for layer in layers:
            func = getattr(layer, "_gradient_checkpointing_func", None)
            if getattr(layer, "gradient_checkpointing", False) and func is not None:
                non_reentrant = getattr(func, "keywords", {}).get("use_reentrant") is False
                # the recompute mark needs checkpoint's context_fn, which only the non-reentrant one takes
                marks = tile != 0 and non_reentrant
                layer._gradient_checkpointing_func = partial(_layer_checkpoint, state, func, non_reentrant, marks)
                offloading += offload is not False
    if tile != 0:
        for layer in layers:
            mlp = getattr(layer, "mlp", None)
            if mlp is None:
                continue
            # The gated MLPs' tiles call the projections directly (not recompute.py's forward, whose hooks must
            # not nest inside the tile's checkpoint); others run their current forward per tile.
            act = layer_activation(layer)
            tile_fn = partial(_gated_mlp, mlp, act, liger) if act else mlp.forward
            mlp.forward = partial(_tiled_mlp_forward, layer, state, mlp.forward, tile_fn)
            tiling += 1
    hf_model._tw_longctx = state
    return state, offloading, tiling
