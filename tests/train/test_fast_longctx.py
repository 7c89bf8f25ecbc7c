"""Long context (tunewise.train.fast.longctx): the tiled MLP and the offloaded checkpoint inputs give the loss and
every adapter gradient of the untiled, on-device path (float32, tiny Llama, LoRA on every linear layer), and
nothing in a training step is [tokens, intermediate], [tokens, vocab] or [tokens, tokens]."""

import copy
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tunewise.train.fast.longctx as lc
from tunewise.config import LoraConfig, TrainConfig
from tunewise.testing import build_model
from tunewise.train.fast import apply_fast_path
from tunewise.train.lora import apply_lora

VOCAB = 97
TOL = 1e-3
INTERMEDIATE = 64  # tunewise.testing.build_model's MLP width (hidden 32, 2 layers, 4 heads, 2 kv heads)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _model(seed: int = 0):
    model = apply_lora(build_model(VOCAB, seed=seed), LoraConfig(r=4, alpha=8, dropout=0.0))
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, which would make every A gradient zero: test real ones
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return model


def _batch(tokens: int = 72, rows: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (rows, tokens), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100  # a prompt without labels
    return {"input_ids": ids, "labels": labels}


def _fast(model, gc: bool = True, **fast):
    train = TrainConfig(fast={"enabled": True, "loss_chunk_tokens": 16, **fast}, gradient_checkpointing=gc)
    return apply_fast_path(model, train, "cpu", log=False)


def _state(model) -> lc.LongContext:
    return model.get_base_model()._tw_longctx


def _loss_and_grads(model, batch: dict) -> tuple[torch.Tensor, dict]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _worst(reference, other) -> tuple[float, float]:
    """(relative loss error, worst relative error over every adapter gradient)."""
    (loss_r, grads_r), (loss_o, grads_o) = reference, other
    assert grads_r.keys() == grads_o.keys() and len(grads_r) == 2 * 7 * 2  # 2 layers × 7 linears × A, B
    assert all(g.abs().sum() > 0 for g in grads_r.values())  # every compared gradient is a real one
    return abs(loss_o.item() - loss_r.item()) / abs(loss_r.item()), max(_rel(grads_o[n], grads_r[n]) for n in grads_r)


def _assert_same(reference, other) -> None:
    loss_err, grad_err = _worst(reference, other)
    assert loss_err < TOL and grad_err < TOL, (loss_err, grad_err)


@pytest.mark.parametrize("gc", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_tiled_mlp_gives_the_untiled_loss_and_every_adapter_gradient(gc, fused):
    """Tiles of 16 tokens over 2 rows of 72 (144 tokens: 9 tiles), checkpointed layers or not, LoRA fused and
    grouped (gate/up as one) or PEFT's own layers."""
    untiled = _model()
    tiled = copy.deepcopy(untiled)
    _fast(untiled, gc, tile_mlp_tokens=0, fused_lora=fused)
    report = _fast(tiled, gc, tile_mlp_tokens=16, fused_lora=fused)
    assert report.tiled_mlps == 2 and (report.fused_lora_layers == 14) == fused
    batch = _batch(rows=2)
    reference = _loss_and_grads(untiled, batch)
    assert _state(untiled).tiles == 0
    _assert_same(reference, _loss_and_grads(tiled, batch))
    assert _state(tiled).tiles == 2 * 9  # each layer's forward: 9 tiles


@pytest.mark.parametrize("early_stop", [True, False])
def test_the_layer_recompute_runs_no_tile(early_stop, monkeypatch):
    """A checkpointed layer's recompute stops at its last tile's input (checkpoint's early stop): each tile runs
    in forward and once in its own backward, never in the layer's recompute. Without early stop the recompute
    computes the MLP output (unused, no grad) and the gradients are still those of the untiled path."""
    calls = [0]
    gated = lc._gated_mlp

    def counting(mlp, act, liger, x):
        calls[0] += 1
        return gated(mlp, act, liger, x)

    monkeypatch.setattr(lc, "_gated_mlp", counting)
    untiled = _model()
    tiled = copy.deepcopy(untiled)
    _fast(untiled, tile_mlp_tokens=0)
    _fast(tiled, tile_mlp_tokens=16)
    batch = _batch(rows=2)
    reference = _loss_and_grads(untiled, batch)
    calls[0] = 0
    with torch.utils.checkpoint.set_checkpoint_early_stop(early_stop):
        _assert_same(reference, _loss_and_grads(tiled, batch))
    assert calls[0] == 2 * 9 * (2 if early_stop else 3)


def test_a_tile_longer_than_the_input_leaves_the_mlp_whole():
    model = _model()
    _fast(model, tile_mlp_tokens=4096)
    _loss_and_grads(model, _batch())
    assert _state(model).tiles == 0


def test_wrong_tiling_would_fail_the_comparison(monkeypatch):
    """The comparison above is sharp: tiles whose outputs land on the wrong tokens (each tile's rows reversed)
    give a loss and gradients far outside the tolerance."""
    untiled = _model()
    tiled = copy.deepcopy(untiled)
    _fast(untiled, tile_mlp_tokens=0)
    batch = _batch()
    reference = _loss_and_grads(untiled, batch)
    gated = lc._gated_mlp
    monkeypatch.setattr(lc, "_gated_mlp", lambda mlp, act, liger, x: gated(mlp, act, liger, x.flip(0)))
    _fast(tiled, tile_mlp_tokens=16)
    loss_err, grad_err = _worst(reference, _loss_and_grads(tiled, batch))
    assert loss_err > 10 * TOL or grad_err > 10 * TOL, (loss_err, grad_err)


@pytest.mark.parametrize("tile", [0, 16])
def test_offloaded_checkpoint_inputs_give_the_checkpointed_loss_and_gradients(tile):
    """offload_activations true on CPU still runs the hooks (a host copy): each checkpointed layer's input is
    packed once in forward, and only that input (not the tensors inside the checkpoint)."""
    plain = _model()
    offloaded = copy.deepcopy(plain)
    _fast(plain, offload_activations=False, tile_mlp_tokens=tile)
    report = _fast(offloaded, offload_activations=True, tile_mlp_tokens=tile)
    assert report.offload_layers == 2 and "offload True" in report.describe()
    batch = _batch()
    reference = _loss_and_grads(plain, batch)
    assert _state(plain).packed == 0
    _assert_same(reference, _loss_and_grads(offloaded, batch))
    state = _state(offloaded)
    assert (state.packed, state.kept) == (2, 0)
    assert state.host_bytes == 2 * 72 * 32 * 4  # two layer inputs of [1, 72, 32] float32


@pytest.mark.parametrize("offload", [True, False])
def test_offload_lets_the_embedding_output_go_until_backward(offload):
    """The first layer's input is the embedding output that enable_input_require_grads made a leaf: offloaded,
    nothing on the device holds it after the forward (autograd would keep a leaf that requires grad)."""
    model = _model()
    _fast(model, offload_activations=offload)
    outputs = []
    embed = model.get_base_model().model.embed_tokens
    embed.register_forward_hook(lambda module, args, out: outputs.append(weakref.ref(out)))
    model.train()
    loss = model(**_batch()).loss
    assert (outputs[0]() is None) == offload
    loss.backward()


def test_inputs_stay_on_the_device_when_the_host_is_short(monkeypatch):
    monkeypatch.setattr(lc, "host_available", lambda: (2**30, 16 * 2**30))  # 1 GiB free: under the reserve
    plain = _model()
    offloaded = copy.deepcopy(plain)
    _fast(plain, offload_activations=False)
    _fast(offloaded, offload_activations=True)
    batch = _batch()
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(offloaded, batch))
    assert (_state(offloaded).packed, _state(offloaded).kept) == (0, 2)


def test_the_host_room_is_shared_by_the_ranks_on_the_host(monkeypatch):
    monkeypatch.setattr(lc, "host_available", lambda: (40 * 2**30, 128 * 2**30))  # 40 GiB free, 8 kept back
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = lc.host_spare()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # as torchrun --nproc-per-node 4 sets it
    assert (alone, lc.host_spare()) == (32 * 2**30, 8 * 2**30)


def test_offload_needs_checkpointed_layers():
    report = _fast(_model(), gc=False, offload_activations=True)
    assert report.offload_layers == 0


def test_auto_leaves_cpu_training_unchanged():
    model = _model()
    report = _fast(model)
    assert report.offload_layers == 2 and report.tiled_mlps == 2  # patched, but auto never fires on CPU
    _loss_and_grads(model, _batch())
    state = _state(model)
    assert (state.packed, state.tiles) == (0, 0)


class _Largest(TorchDispatchMode):
    """The largest tensor any op returns, and the op."""

    def __init__(self):
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.numel:
                self.numel, self.op = t.numel(), func
        return out


def test_a_long_step_allocates_nothing_quadratic_nor_of_vocab_or_mlp_width():
    """512 tokens, batch 1, no padding, with offload and 64-token tiles: every tensor of the forward and backward
    is under [tokens, intermediate] (32,768 elements), so no [tokens, vocab] logits (49,664), no full MLP
    activation and no [tokens, tokens] mask or score matrix (262,144; SDPA gets is_causal and no mask)."""
    tokens = 512
    model = _model()
    _fast(model, offload_activations=True, tile_mlp_tokens=64)
    batch = _batch(tokens)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])  # what a collator passes: still no mask built
    with _Largest() as largest:
        _loss_and_grads(model, batch)
    assert largest.numel <= tokens * 32, (largest.numel, largest.op)  # [tokens, hidden] is the largest
    assert _state(model).packed == 2 and _state(model).tiles == 2 * 8


def test_liger_swiglu_calls_stay_under_two_to_the_31_elements():
    """Liger's kernels offset rows in 32 bits: with them on, the MLP runs in tiles whenever one SwiGLU call would
    get 2^31 elements, in training or not, whatever tile_mlp_tokens says (15 rows stand for that limit here)."""
    state = lc.LongContext("auto", "auto", layers=2, liger_rows=15)
    x = torch.zeros(1, 20, 32)
    assert state.tile_for(x, training=True) == 15 and state.tile_for(x, training=False) == 15
    state.tile = 4
    assert state.tile_for(x, training=True) == 4 and state.tile_for(x, training=False) == 15
    assert state.tile_for(torch.zeros(1, 12, 32), training=True) == 4
    assert state.tile_for(torch.zeros(1, 12, 32), training=False) == 0


def test_inputs_past_liger_norm_and_rope_limits_are_refused(monkeypatch):
    from tunewise.errors import ConfigError

    monkeypatch.setattr(lc, "LIGER_ELEMENTS", 2048)  # 64 tokens × hidden 32 stand for 2^31 elements
    model = _model()
    report = _fast(model)
    hf = model.get_base_model()
    lc.enable_long_context(hf, list(hf.model.layers), "auto", "auto", liger=True)
    model.train()
    model(**_batch(tokens=20)).loss.backward()
    with pytest.raises(ConfigError, match="train.fast.kernels: false for inputs of 64 tokens"):
        model(**_batch(tokens=64))
    assert report.kernels is False  # CPU: the patch above stands for Liger's


class _LiveBytes(TorchDispatchMode):
    """The peak of the bytes held by tensors that ops created (by storage, freed when their last tensor goes)."""

    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak = {}, 0, 0

    def _release(self, ptr: int) -> None:
        nbytes, count = self.live[ptr]
        if count > 1:
            self.live[ptr] = (nbytes, count - 1)
        else:
            del self.live[ptr]
            self.now -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(t, torch.Tensor) or not t.untyped_storage().data_ptr():
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            nbytes, count = self.live.get(ptr, (storage.nbytes(), 0))
            if not count:
                self.now += nbytes
                self.peak = max(self.peak, self.now)
            self.live[ptr] = (nbytes, count + 1)
            weakref.finalize(t, self._release, ptr)
        return out


def _peak_bytes(layers: int, offload: bool, tokens: int = 1024) -> tuple[int, int]:
    """(peak bytes of one training step's tensors, bytes of the adapters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=224, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=tokens)
    model = apply_lora(LlamaForCausalLM(cfg), LoraConfig(r=4, alpha=8, dropout=0.0))
    _fast(model, offload_activations=offload, tile_mlp_tokens=128 if offload else 0)
    model.train()
    ids = torch.randint(4, VOCAB, (1, tokens), generator=torch.Generator().manual_seed(0))
    with _LiveBytes() as live:
        model(input_ids=ids, labels=ids).loss.backward()
    return live.peak, sum(p.nbytes for p in model.parameters() if p.requires_grad)


def test_with_offload_and_tiles_the_device_peak_does_not_grow_with_depth(monkeypatch):
    """What the bench's short-depth search relies on: with the layer inputs offloaded, the device holds one
    layer's backward whatever the depth; without, every layer adds its input. The host copies are made outside
    torch's allocator here, so that only device-side tensors are counted."""
    def pack(state, t):
        state.packed += 1
        return (lc._OFFLOADED, t.device, t.detach().numpy().copy())

    monkeypatch.setattr(lc, "_pack", pack)
    monkeypatch.setattr(lc, "_unpack", lambda p: torch.from_numpy(p[2]) if isinstance(p, tuple) else p)
    layer_input = 1024 * 64 * 4  # [tokens, hidden] float32
    (plain2, adapters2), (plain6, adapters6) = _peak_bytes(2, False), _peak_bytes(6, False)
    (long2, _), (long6, _) = _peak_bytes(2, True), _peak_bytes(6, True)
    assert plain6 - plain2 >= 4 * layer_input  # 4 more layers, each keeping its input
    # 4 more layers' adapter gradients and their scaled copies (casts.py), nothing per token
    assert long6 - long2 <= 2 * (adapters6 - adapters2) + 0.05 * layer_input, (long6 - long2, adapters6 - adapters2)
