"""Grouped LoRA projections (fast.grouped_lora): q/k/v and gate/up computed as one group each give the plain
path's loss and gradients, and really run grouped (counted), in every combination they meet in training, with
and without base-layer biases (Qwen2's q/k/v)."""

import copy

import pytest
import torch

from tests.train.test_fast import VOCAB, _assert_same, _batch, _fast, _lora_model, _loss_and_grads
from tests.train.test_fast_qlora import _to_4bit, dequantized  # noqa: F401 (a fixture, used below)
from tunewise.config import LoraConfig
from tunewise.models.estimate import saved_activation_bytes
from tunewise.testing import build_model
from tunewise.train.fast import lora, lora_groups
from tunewise.train.lora import apply_lora
from tunewise.train.tokenize import PadCollator


@pytest.fixture
def group_calls(monkeypatch):
    calls = []
    apply = lora_groups.GroupedLora.apply

    def counting(*args):
        calls.append(len(args[3]))  # x, casts, scaling, ranks, ...
        return apply(*args)

    monkeypatch.setattr(lora_groups.GroupedLora, "apply", counting)
    return calls


@pytest.mark.parametrize("extra", [{}, {"recompute_elementwise": True}, {"gc": True, "checkpoint_layers": 0.5}])
def test_groups_give_the_plain_gradients(extra, group_calls):
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    report = _fast(fast, **extra)
    assert report.lora_groups == 4 and "LoRA groups 4" in report.describe()  # 2 layers × (q/k/v, gate/up)
    batch = PadCollator(pad_id=3)(_batch(seed=11))
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))
    reruns = 2 if extra.get("gc") else 0  # the checkpointed layer runs its forward again in backward
    assert sorted(group_calls) == sorted([3, 2] * 2 + [3, 2][:reruns])


def test_groups_are_off_when_switched_off():
    off = _fast(_lora_model(), grouped_lora=False)
    assert off.lora_groups == 0 and off.fused_lora_layers == 14


DROPOUT_CASES = [{}, {"recompute_elementwise": True}, {"gc": True, "checkpoint_layers": 0.5},
                 {"grouped_lora": False}, {"grouped_lora": False, "recompute_elementwise": True},
                 {"grouped_lora": False, "gc": True, "checkpoint_layers": 0.5}]


@pytest.mark.parametrize("extra", DROPOUT_CASES)
def test_lora_dropout_gives_peft_loss_and_gradients_with_the_same_masks(extra, group_calls):
    """LoRA dropout 0.1: each projection draws its mask with the RNG call PEFT's nn.Dropout makes, in PEFT's
    order (q, k, v, o, gate, up, down), so under one seed the loss and every adapter gradient are PEFT's."""
    plain = _lora_model(dropout=0.1)
    fast = copy.deepcopy(plain)
    report = _fast(fast, **extra)
    assert report.lora_groups == (0 if extra.get("grouped_lora") is False else 4)
    batch = PadCollator(pad_id=3)(_batch(seed=13))
    want = _loss_and_grads(plain, batch)
    _assert_same(want, _loss_and_grads(fast, batch))
    assert len(group_calls) == (0 if extra.get("grouped_lora") is False else 4 + 2 * bool(extra.get("gc")))
    with pytest.raises(AssertionError):  # the comparison sees the masks: another seed fails it
        _assert_same(want, _loss_and_grads(fast, batch, seed=1))


def test_masks_drawn_in_another_member_order_fail_the_comparison(monkeypatch):
    """The control for the test above: the same RNG draws given to the members in reverse order."""
    plain = _lora_model(dropout=0.1)
    fast = copy.deepcopy(plain)
    _fast(fast)

    def reversed_draws(x2, sa, ranks, dropouts):
        state = lora_groups.dropout_generator(x2).get_state()  # backward replays them in member order
        drawn = [lora_groups.dropout_mask(x2, p) for p in dropouts][::-1]  # PEFT's draws, members swapped
        xa, start = x2.new_empty(x2.shape[0], sum(ranks)), 0
        for r, (xd, _) in zip(ranks, drawn):
            xa[:, start : start + r] = xd @ sa[start : start + r].t()
            start += r
        return xa, state

    monkeypatch.setattr(lora_groups, "_dropped_down", reversed_draws)
    batch = PadCollator(pad_id=3)(_batch(seed=13))
    with pytest.raises(AssertionError):
        _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))


def _saved_bytes(model, batch) -> int:
    """Bytes of the distinct tensors autograd saves in one training forward (parameters left out)."""
    model.train()
    torch.manual_seed(0)
    return saved_activation_bytes(model, batch=batch)


@pytest.mark.parametrize("grouped", [True, False])
def test_lora_dropout_keeps_no_masks(grouped):
    """With dropout the fused layers and the groups keep the same tensors as without: no mask, no dropped copy
    (backward draws the masks again), while PEFT keeps its dropped copies (and, on CUDA, masks)."""
    batch = PadCollator(pad_id=3)(_batch(seed=14))
    saved = {}
    for name, dropout, fast in (("fast0", 0.0, True), ("fast", 0.1, True), ("plain0", 0.0, False),
                                ("plain", 0.1, False)):
        model = _lora_model(dropout=dropout)
        if fast:
            report = _fast(model, grouped_lora=grouped)
            assert report.lora_groups == (4 if grouped else 0) and report.fused_lora_layers == 14
        saved[name] = _saved_bytes(model, batch)
    assert saved["fast"] == saved["fast0"]
    assert saved["plain"] > saved["plain0"]


@pytest.mark.parametrize("extra", DROPOUT_CASES)
def test_backward_leaves_the_rng_stream_where_peft_leaves_it(extra):
    """Drawing the masks again in backward does not move the generator: after forward and backward, the next
    random numbers are those after PEFT's forward and backward from the same seed."""
    plain = _lora_model(dropout=0.1)
    fast = copy.deepcopy(plain)
    _fast(fast, **extra)
    batch = PadCollator(pad_id=3)(_batch(seed=15))
    after = []
    for model in (plain, fast):
        _loss_and_grads(model, batch)
        after.append(torch.rand(16))
    assert torch.equal(after[0], after[1])


def test_a_replay_that_does_not_set_the_generator_back_fails_the_stream_check(monkeypatch):
    """The control for the test above: backward leaves the generator where it set it for its last replay."""
    plain = _lora_model(dropout=0.1)
    fast = copy.deepcopy(plain)
    _fast(fast)

    def rewind_for_good(generator, state):
        generator.set_state(state)
        return state  # what backward "sets back" afterwards

    monkeypatch.setattr(lora, "rewind", rewind_for_good)  # groups and single layers replay through lora.replaying
    batch = PadCollator(pad_id=3)(_batch(seed=15))
    after = []
    for model in (plain, fast):
        _loss_and_grads(model, batch)
        after.append(torch.rand(16))
    assert not torch.equal(after[0], after[1])


def test_evaluation_and_a_deep_copy_run_each_projection_on_its_own(group_calls):
    """Evaluation (no grad) keeps the per-projection path; a deep copy of a grouped model owns its groups."""
    fast = _lora_model()
    _fast(fast)
    batch = PadCollator(pad_id=3)(_batch(seed=12))
    fast.eval()
    with torch.no_grad():
        logits = fast(**batch).logits
    assert group_calls == [] and logits is not None
    twin = copy.deepcopy(fast)
    for p in twin.parameters():
        if p.requires_grad:
            p.data.add_(0.05)
    twin.train()
    _loss_and_grads(twin, batch)
    assert sorted(group_calls) == [2, 2, 3, 3]
    grouped = {id(m) for m in twin.modules() if hasattr(m.forward, "args")}
    assert grouped and all(id(layer) in grouped for g in _groups(twin) for layer in g.layers)


def _groups(model) -> list:
    return [m.forward.args[0] for m in model.modules() if hasattr(m.forward, "args")
            and isinstance(m.forward.args[0], lora_groups.LoraGroup)]


def test_a_member_called_alone_or_on_another_input_gets_its_own_output():
    """Outputs are handed over only for the very input they were computed from."""
    model = _lora_model()
    _fast(model)
    attn = model.get_base_model().model.layers[0].self_attn
    model.train()
    x, y = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    kx = attn.k_proj(x)  # computes the group for x
    vy = attn.v_proj(y)  # another input: computes the group for y
    with torch.no_grad():
        assert torch.allclose(kx, attn.k_proj.base_layer(x) + _delta(attn.k_proj, x), atol=1e-5)
        assert torch.allclose(vy, attn.v_proj.base_layer(y) + _delta(attn.v_proj, y), atol=1e-5)
        assert torch.allclose(attn.q_proj(y), attn.q_proj.base_layer(y) + _delta(attn.q_proj, y), atol=1e-5)


def _delta(layer, x):
    return layer.lora_B["default"](layer.lora_A["default"](x)) * layer.scaling["default"]


def _biased_model(dropout: float = 0.0, seed: int = 0):
    """The tiny Llama with biases on every projection (attention_bias, mlp_bias), drawn nonzero: q/k/v and
    gate/up are then biased groups, o and down biased single layers."""
    base = build_model(VOCAB, seed=seed, attention_bias=True, mlp_bias=True)
    g = torch.Generator().manual_seed(seed + 5)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.endswith("proj.bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model = apply_lora(base, LoraConfig(r=4, alpha=8, dropout=dropout))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return model


@pytest.fixture
def biased_calls(monkeypatch):
    """(members, whether the group was given biases) per GroupedLora call."""
    calls = []
    apply = lora_groups.GroupedLora.apply
    monkeypatch.setattr(lora_groups.GroupedLora, "apply", lambda *a: calls.append((len(a[3]), a[7] is not None))
                        or apply(*a))
    return calls


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_biased_groups_give_the_per_projection_and_peft_gradients(dropout, biased_calls):
    """A biased group (q/k/v, gate/up) against the same projections fused one at a time and against PEFT:
    loss and every adapter gradient alike; the frozen biases get no gradient."""
    plain = _biased_model(dropout)
    grouped, single = copy.deepcopy(plain), copy.deepcopy(plain)
    assert _fast(grouped).lora_groups == 4
    assert _fast(single, grouped_lora=False).lora_groups == 0
    batch = PadCollator(pad_id=3)(_batch(seed=15))
    want = _loss_and_grads(plain, batch)
    by_one = _loss_and_grads(single, batch)
    assert biased_calls == []
    got = _loss_and_grads(grouped, batch)
    assert sorted(biased_calls) == [(2, True), (2, True), (3, True), (3, True)]
    _assert_same(want, by_one)
    _assert_same(want, got)
    _assert_same(by_one, got)
    assert all(p.grad is None for n, p in grouped.named_parameters() if n.endswith("bias"))


@pytest.mark.parametrize("wrong", ["dropped", "twice"])
def test_a_bias_dropped_or_added_twice_by_the_group_fails_the_comparison(wrong, monkeypatch):
    """The control for the test above: the group's base product without its bias, or with it added twice."""
    plain = _biased_model()
    fast = copy.deepcopy(plain)
    _fast(fast)
    right = lora_groups.base_output

    def wrong_output(x2, w, bias):
        if wrong == "dropped":
            return right(x2, w, None)
        return right(x2, w, bias) if bias is None else right(x2, w, bias).add_(bias)

    monkeypatch.setattr(lora_groups, "base_output", wrong_output)
    batch = PadCollator(pad_id=3)(_batch(seed=15))
    with pytest.raises(AssertionError):
        _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))


def test_a_trainable_bias_keeps_its_projections_ungrouped_and_gets_its_gradient(biased_calls):
    """A bias that trains (PEFT's bias="all", or unfrozen later) is never a group member's: its block runs each
    projection through the per-projection path, which computes the bias gradient."""
    plain = _biased_model()
    plain.get_base_model().model.layers[0].self_attn.k_proj.base_layer.bias.requires_grad_(True)
    fast = copy.deepcopy(plain)
    assert _fast(fast).lora_groups == 3  # layer 0's q/k/v is not grouped
    mlp = fast.get_base_model().model.layers[1].mlp
    mlp.up_proj.base_layer.bias.requires_grad_(True)  # unfrozen after grouping: layer 1's gate/up falls back
    plain.get_base_model().model.layers[1].mlp.up_proj.base_layer.bias.requires_grad_(True)
    batch = PadCollator(pad_id=3)(_batch(seed=16))
    want, got = _loss_and_grads(plain, batch), _loss_and_grads(fast, batch)
    _assert_same(want, got)
    assert sorted(biased_calls) == [(2, True), (3, True)]
    assert sum(n.endswith("bias") for n in got[1]) == 2


@pytest.mark.usefixtures("dequantized")
def test_a_biased_4bit_group_gives_peft_loss_and_gradients():
    """Over 4-bit base layers with biases (QLoRA of Qwen2): the bias in the compute dtype, once per member."""
    plain, fast = _to_4bit(_biased_model(0.05)), _to_4bit(_biased_model(0.05))  # built alike from one seed
    report = _fast(fast)
    assert report.lora_groups == 4 and report.fused_4bit_layers == 14
    batch = PadCollator(pad_id=3)(_batch(seed=17))
    _assert_same(_loss_and_grads(plain, batch), _loss_and_grads(fast, batch))


def test_under_autocast_a_biased_group_adds_the_bias_in_the_compute_dtype(biased_calls):
    """bf16 autocast over fp32 weights: each member's output is bf16, as the per-projection path's (which casts
    the bias to the compute dtype), and the same values."""
    grouped, single = _biased_model(), _biased_model()
    _fast(grouped)
    _fast(single, grouped_lora=False)
    x = torch.randn(2, 5, 32, requires_grad=True)
    outs = []
    for model in (grouped, single):
        model.train()
        attn = model.get_base_model().model.layers[0].self_attn
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)])
    assert biased_calls == [(3, True)]
    for got, want in zip(*outs):
        assert got.dtype == want.dtype == torch.bfloat16
        assert ((got.float() - want.float()).norm() / want.float().norm()).item() < 1e-2
