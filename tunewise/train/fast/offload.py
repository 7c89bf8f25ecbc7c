"""Kept activations in pinned CPU memory while the GPU computes: `count` decoder layers that are not checkpointed
send every tensor they save for backward to the host on a copy stream, and their backward gets them back on
another, ahead of use. No recompute and, at the step's peak, at most two of those layers' saved bytes on the GPU:
the memory-for-time trade that checkpointing makes with arithmetic, made here with the host link instead.

Why by hand: torch.autograd.graph.save_on_cpu copies on the compute stream (the GPU waits for each copy) and
fetches on first use; FSDP's and DeepSpeed's offload move parameters or optimizer state, not saved activations.

How it stays honest about memory:
- forward: a layer's saved tensors stay referenced until its copy's event has passed (no record_stream, whose frees
  look done to torch's allocator statistics while the copy still reads them), so the measured peak counts copies still
  in flight; every decoder layer's forward end drops those that are done. Done means done as the host sees it, and the
  host runs ahead of the GPU: with several layers' kernels queued, copies the GPU would have finished in time still
  count (H200, 8,192-token micro-steps, without the bound below: 4.0-4.9 GiB over the prediction; none at 2,048,
  where the host is the bottleneck). So an offloaded layer's forward waits on the host until at most MAX_INFLIGHT
  earlier copies are in flight; the GPU keeps the layers queued in between to work on (with the bound every measured
  peak was within the prediction: bench/results/train_speed.md, 2026-11-30 round off4). The copies of a layer are
  issued when its forward returns, one stream wait per layer; they run while the next layers compute. The offloaded
  layers are spread evenly from the first layer on (offloaded_indices): one layer's copy takes longer than one
  layer's forward (H200, Llama-3-8B: ~14 against ~6 ms at 8,192 tokens), so consecutive offloaded layers would pile
  copies up on the GPU. auto_plan.py sizes `count` to the host link's rate (DEVICES' host_link_gbs in
  tunewise.models.estimate), which keeps the layers between two offloaded ones enough compute to hide one copy.
- backward: each decoder layer's backward start (a hook on its output's gradient) fetches the next offloaded
  layers in backward order while the allocated memory plus the fetch stays at or under what was allocated when
  the backward started (the layers above free room as their backward ends); a layer whose tensors are not back
  when its backward starts is fetched then and waited for. A layer's fetched tensors are dropped when the layer
  below starts its backward.
- dedup: views of one storage (q, k and v of one projection; a tensor two ops save) travel once.
Parameters and tensors under `min_bytes` (LoRA's x·A, the attention's log-sum-exp, RoPE's shared cos/sin at short
lengths) stay where they are. On CPU (tests) the same bookkeeping runs with synchronous copies."""

from __future__ import annotations

from collections import deque
from functools import partial

import torch

from tunewise.train.fast.recompute import OUTER

MIN_BYTES = 4 * 2**20  # smaller saved tensors stay on the GPU: a copy's fixed cost outweighs what it frees
# Offloaded layers whose copies may be in flight, as the host sees them, when another one starts its forward: with
# that one's, MAX_INFLIGHT + 1 layers' saved bytes (tunewise.models.estimate.OFFLOAD_INFLIGHT_LAYERS counts them).
MAX_INFLIGHT = 1
_OFF = object()


class _Entry:
    """One storage saved by an offloaded layer: on the device until copied, on the host, then back."""

    __slots__ = ("device_bytes", "host", "fetched")

    def __init__(self, device_bytes: torch.Tensor):
        self.device_bytes = device_bytes  # uint8 view of the whole storage (None once the copy to the host is done)
        self.host: torch.Tensor | None = None
        self.fetched: torch.Tensor | None = None


class LayerStore:
    """The offloaded saved tensors of one layer in one forward."""

    def __init__(self, index: int):
        self.index = index
        self.entries: dict[int, _Entry] = {}
        self.nbytes = 0
        self.to_host = self.to_device = None  # CUDA events: copies issued by flush / fetch done
        self.waited = False  # the compute stream waits on to_device once per backward

    def release_device(self) -> None:
        for e in self.entries.values():
            e.device_bytes = None

    @property
    def is_back(self) -> bool:
        """Fetched back to the GPU (every entry is, or none: fetch takes the whole layer)."""
        return any(e.fetched is not None for e in self.entries.values())

    def release_fetched(self) -> None:
        for e in self.entries.values():
            e.fetched = None
        self.to_device, self.waited = None, False


class ActivationOffload:
    """The streams, the layers' stores of the current forward, and the copies in flight of one model."""

    def __init__(self, model, min_bytes: int = MIN_BYTES):
        self.min_bytes = min_bytes
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.cuda = next(model.parameters()).is_cuda and torch.cuda.is_available()
        self.d2h = torch.cuda.Stream() if self.cuda else None
        self.h2d = torch.cuda.Stream() if self.cuda else None
        self.stores: list[LayerStore] = []  # this forward's, in forward order
        self.inflight: deque[LayerStore] = deque()  # copied to the host, not yet known done
        self.host_bytes = self.copies = self.packs = self.fetch_waits = 0  # counters (the bench reports them)
        self.limit: int | None = None  # allocated bytes when this forward's backward started (CUDA)
        self.late_bytes = 0  # most bytes still on their way to the host when a backward started

    # ---- forward ----
    def begin(self, index: int) -> LayerStore:
        if self.stores and index <= self.stores[-1].index:
            self.stores = []  # a new forward: the last one's stores live on only in its graph, if it still has one
            self.limit = None
        self.poll(keep=MAX_INFLIGHT)
        store = LayerStore(index)
        self.stores.append(store)
        return store

    def pack(self, store: LayerStore, t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if storage.nbytes() < self.min_bytes or key in self.params or t.device.type != ("cuda" if self.cuda
                                                                                         else "cpu"):
            return t
        self.packs += 1
        if key not in store.entries:
            store.entries[key] = _Entry(torch.empty(0, dtype=torch.uint8, device=t.device).set_(storage))
            store.nbytes += storage.nbytes()
        return (_OFF, store, key, t.dtype, t.shape, t.stride(), t.storage_offset())

    def flush(self, store: LayerStore) -> None:
        """The layer's forward is done: copy its storages to the host (on the copy stream, behind the compute)."""
        if not store.entries:
            return
        if self.cuda:
            self.d2h.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.d2h):
                for e in store.entries.values():
                    e.host = torch.empty(e.device_bytes.numel(), dtype=torch.uint8, pin_memory=True)
                    e.host.copy_(e.device_bytes, non_blocking=True)
                store.to_host = torch.cuda.Event()
                store.to_host.record()
            self.inflight.append(store)
        else:
            for e in store.entries.values():
                e.host = e.device_bytes.clone()
            store.release_device()
        self.host_bytes += store.nbytes
        self.copies += len(store.entries)

    def poll(self, keep: int | None = None) -> None:
        """Drop the device copies of layers whose copy to the host has finished; with `keep`, first wait on the
        host (see the module docstring; the GPU does not wait) until at most that many copies are in flight."""
        while self.inflight:
            if not self.inflight[0].to_host.query():
                if keep is None or len(self.inflight) <= keep:
                    break
                self.inflight[0].to_host.synchronize()
            self.inflight.popleft().release_device()

    # ---- backward ----
    def fetch(self, store: LayerStore) -> None:
        if store.is_back:
            return
        if not self.cuda:
            for e in store.entries.values():
                e.fetched = e.host.clone()
            return
        self.h2d.wait_event(store.to_host)
        with torch.cuda.stream(self.h2d):
            for e in store.entries.values():
                e.fetched = torch.empty(e.host.numel(), dtype=torch.uint8, device="cuda")
                e.fetched.copy_(e.host, non_blocking=True)
            store.to_device = torch.cuda.Event()
            store.to_device.record()

    def on_backward(self, index: int) -> None:
        """Layer `index` starts its backward: release the layers above it, fetch ahead what fits: while the
        allocated bytes stay at or under those at the backward's start (not the peak so far, which each fetch on
        top of a backward's own work would raise a little, step after step)."""
        self.poll()
        if self.cuda and self.limit is None:
            self.limit = torch.cuda.memory_allocated()
            self.late_bytes = max(self.late_bytes, sum(s.nbytes for s in self.inflight))
        for store in self.stores:
            if store.index > index:
                store.release_fetched()
        ahead = [s for s in reversed(self.stores) if s.index < index and s.entries and not s.is_back]
        if not ahead:
            return
        if not self.cuda:
            self.fetch(ahead[0])
            return
        for store in ahead:
            if torch.cuda.memory_allocated() + store.nbytes > self.limit:
                break
            self.fetch(store)

    def unpack(self, packed):
        if not (isinstance(packed, tuple) and packed and packed[0] is _OFF):
            return packed
        _, store, key, dtype, shape, stride, offset = packed
        entry = store.entries[key]
        if entry.fetched is None:
            self.fetch_waits += 1
            self.fetch(store)
        if self.cuda and not store.waited:
            current = torch.cuda.current_stream()
            current.wait_event(store.to_device)
            for e in store.entries.values():
                e.fetched.record_stream(current)
            store.waited = True
        out = torch.empty(0, dtype=dtype, device=entry.fetched.device)
        return out.set_(entry.fetched.untyped_storage(), offset, shape, stride)


class _Saving(torch.autograd.graph.saved_tensors_hooks):
    """Around an offloaded layer's forward: its saved tensors, recompute.py's recipe sources included, go to
    the store."""

    def __init__(self, state: ActivationOffload, store: LayerStore):
        self.hooks = (partial(state.pack, store), state.unpack)
        super().__init__(*self.hooks)

    def __enter__(self):
        OUTER.append(self.hooks)
        return super().__enter__()

    def __exit__(self, *exc):
        OUTER.pop()
        return super().__exit__(*exc)


def _offloaded_forward(state: ActivationOffload, layer, index: int, forward, *args, **kwargs):
    if not (layer.training and torch.is_grad_enabled()):
        return forward(*args, **kwargs)
    store = state.begin(index)
    with _Saving(state, store):
        out = forward(*args, **kwargs)
    state.flush(store)
    return out


def _after_forward(state: ActivationOffload, index: int, module, args, output) -> None:
    """Every decoder layer's forward end: drop what has reached the host, and hook the layer's backward start."""
    state.poll()
    hidden = output[0] if isinstance(output, tuple) else output
    if module.training and torch.is_tensor(hidden) and hidden.requires_grad:
        hidden.register_hook(lambda grad: state.on_backward(index) or grad)


def offloaded_indices(layers: int, count: int) -> frozenset:
    """The decoder layers that offload: `count` of `layers`, spread evenly from the first (see the module
    docstring)."""
    count = min(count, layers)
    return frozenset(k * layers // count for k in range(count)) if count else frozenset()


def enable_offload(hf_model, layers: list, indices: frozenset, min_bytes: int | None = None) -> int:
    """The layers at `indices` (offloaded_indices) offload what they save, where not checkpointed (call after
    checkpointing and recompute.py are set up, before long context's patches; the shared state is
    hf_model._tw_offload). Returns how many layers offload."""
    chosen = [i for i, layer in enumerate(layers) if i in indices and not getattr(layer, "gradient_checkpointing",
                                                                                    False)]
    if not chosen:
        return 0
    state = ActivationOffload(hf_model, MIN_BYTES if min_bytes is None else min_bytes)
    for i in chosen:
        layers[i].forward = partial(_offloaded_forward, state, layers[i], i, layers[i].forward)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(partial(_after_forward, state, i))
    hf_model._tw_offload = state
    return len(chosen)
