"""Offloaded kept layers (tunewise.train.fast.offload) give plain PEFT's loss and gradients, move what the layers
save through the host once per storage, never move parameters, and fetch a layer back before its backward."""

import copy

import pytest
import torch

from tests.train.test_fast import _assert_same, _assert_same_outputs, _batch, _fast, _lora_model, _loss_and_grads
from tunewise.train.fast import offload, recompute
from tunewise.train.tokenize import PadCollator


@pytest.fixture(autouse=True)
def _every_tensor(monkeypatch):
    monkeypatch.setattr(offload, "MIN_BYTES", 0)  # the tiny model's tensors are all under the real floor


def _state(model) -> offload.ActivationOffload:
    return model.get_base_model()._tw_offload


@pytest.mark.parametrize(("dropout", "recipes", "ckpt"), [(0.0, True, None), (0.1, True, None), (0.1, False, None),
                                                           (0.0, True, 0.5)])
def test_offloaded_layers_give_peft_s_loss_and_gradients(dropout, recipes, ckpt):
    plain = _lora_model(dropout)
    fast = copy.deepcopy(plain)
    extra = {} if ckpt is None else {"checkpoint_layers": ckpt}
    report = _fast(fast, gc=ckpt is not None, offload_kept_layers=2, recompute_elementwise=recipes, **extra)
    assert report.host_kept_layers == (1 if ckpt else 2)  # a checkpointed layer keeps only its input: none offloaded
    batch = PadCollator(pad_id=3)(_batch())
    for step in range(2):  # the second forward starts new stores
        _assert_same(_loss_and_grads(plain, batch, seed=step), _loss_and_grads(fast, batch, seed=step))
    state = _state(fast)
    assert [s.index for s in state.stores] == ([0] if ckpt else [0, 1])
    assert state.host_bytes > 0 and all(s.entries for s in state.stores)


def test_after_training_evaluation_and_generation_give_plain_outputs():
    """The hooks stay on the model after training: a no-grad forward in eval mode and generate() must not notice."""
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    _fast(fast, offload_kept_layers=2, recompute_elementwise=True)
    batch = PadCollator(pad_id=3)(_batch())
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))
    _assert_same_outputs(plain, fast, batch)


def test_views_of_one_storage_travel_once_and_parameters_stay():
    model = _lora_model()
    _fast(model, offload_kept_layers=2, recompute_elementwise=True)
    _loss_and_grads(model, PadCollator(pad_id=3)(_batch()))
    state = _state(model)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for store in state.stores:
        assert not params & set(store.entries)
        assert store.nbytes == sum(e.host.numel() for e in store.entries.values())
    # grouped q/k/v: one projection output, three views; the attention saves all three
    assert state.copies == sum(len(s.entries) for s in state.stores) < state.packs


def test_a_layer_is_fetched_ahead_of_its_backward(monkeypatch):
    """Layer 1's backward start fetches layer 0; only the top offloaded layer, which no layer above it can
    fetch ahead, waits at its first unpack. Without the backward hooks, both wait."""
    model = _lora_model()
    _fast(model, offload_kept_layers=2)
    _loss_and_grads(model, PadCollator(pad_id=3)(_batch()))
    assert _state(model).fetch_waits == 1

    model = _lora_model()
    monkeypatch.setattr(offload.ActivationOffload, "on_backward", lambda self, index: None)
    _fast(model, offload_kept_layers=2)
    _loss_and_grads(model, PadCollator(pad_id=3)(_batch()))
    assert _state(model).fetch_waits == 2


def test_recipe_contexts_hand_other_tensors_and_their_sources_to_the_outer_hooks():
    """Inside an offloaded layer the recipe context is innermost; what it does not replace, and the tensors its
    recipe is computed from, must still reach the offload (else they would stay on the GPU)."""
    seen = []

    def pack(t):
        seen.append(t)
        return ("outer", t)

    def unpack(p):
        return p[1]

    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3, 3, requires_grad=True)
    recompute.OUTER.append((pack, unpack))
    try:
        target = torch.tanh(x)
        with recompute.RecomputeSaved(target, torch.tanh, (x,)):
            y = target @ w  # saves target (the recipe) and w (handed on)
    finally:
        recompute.OUTER.pop()
    assert any(t is x for t in seen) and any(t is w for t in seen) and not any(t is target for t in seen)
    y.sum().backward()
    assert torch.allclose(w.grad, torch.tanh(x).T @ torch.ones(4, 3))


def test_the_plan_offloads_only_where_the_host_link_is_measured_and_within_its_rate():
    from tunewise.models.estimate import ModelShape
    from tunewise.train.fast.auto_plan import choose_plan

    mistral = ModelShape.from_config(dict(  # mistralai/Mistral-7B-v0.3's shape
        model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=32768, tie_word_embeddings=False))
    h200 = choose_plan(mistral, batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H200",
                       offload_layers=None, host_gib=200)
    h100 = choose_plan(mistral, batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H100",
                       offload_layers=None, host_gib=200)
    small_host = choose_plan(mistral, batch_size=4, seq_len=2048, gradient_checkpointing=True, device="H200",
                             offload_layers=None, host_gib=2)
    assert h100.offloaded_layers == 0 and h200.offloaded_layers > 0
    assert h200.checkpointed_layers < h100.checkpointed_layers and h200.speedup > h100.speedup
    assert h200.peak_gib <= h200.plain_peak_gib
    assert small_host.offloaded_layers < h200.offloaded_layers


def test_a_set_offload_count_is_planned_where_the_link_is_not_measured():
    from tunewise.models.estimate import ModelShape
    from tunewise.train.fast.auto_plan import choose_plan

    llama = ModelShape.from_config(dict(  # Llama-3-8B's shape
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False))
    plans = {d: choose_plan(llama, batch_size=4, seq_len=2048, gradient_checkpointing=True, device=d,
                            checkpoint_layers=0.5, offload_layers=4) for d in ("H100", "H200")}
    assert plans["H100"].offloaded_layers == plans["H200"].offloaded_layers == 4
    assert plans["H100"].tokens_per_s < plans["H200"].tokens_per_s  # the assumed link is slower: longer waits


def test_offloaded_layers_are_spread_so_their_copies_do_not_pile_up():
    """A copy takes longer than a layer's forward: offloaded layers start at the first and never sit side by side
    while there is room; the checkpointed ones take the others."""
    from tunewise.train.fast.layers import enable_checkpointing

    spread = sorted(offload.offloaded_indices(32, 11))
    assert spread[0] == 0 and len(spread) == 11 and min(b - a for a, b in zip(spread, spread[1:])) >= 2
    assert offload.offloaded_indices(4, 0) == frozenset() and offload.offloaded_indices(2, 5) == {0, 1}
    model = _lora_model()
    hf = model.get_base_model()
    assert enable_checkpointing(hf, 0.5, avoid=offload.offloaded_indices(2, 1)) == 1
    assert [layer.gradient_checkpointing for layer in hf.model.layers] == [False, True]


class _Copy:
    """A copy to the host the GPU has not finished until the host waits for it."""

    def __init__(self, log: list, name: str):
        self.log, self.name, self.done = log, name, False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.log.append(self.name)
        self.done = True


def test_a_new_offloaded_layer_waits_until_at_most_one_earlier_copy_is_in_flight():
    """The host runs ahead of the GPU, so copies it has not seen finish hold their GPU memory: an offloaded layer's
    forward starts only with MAX_INFLIGHT earlier copies left. A bound that never waits would fail this."""
    state = offload.ActivationOffload(_lora_model(), min_bytes=0)
    waited = []
    for index in range(3):
        store = state.begin(index)
        store.to_host = _Copy(waited, f"copy {index}")
        state.inflight.append(store)  # what flush() does on CUDA
        assert len(state.inflight) <= offload.MAX_INFLIGHT + 1
    assert waited == ["copy 0"] and [s.index for s in state.inflight] == [1, 2]
