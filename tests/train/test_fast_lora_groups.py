"""Grouped LoRA projections (fast.grouped_lora): q/k/v and gate/up computed as one group each give the plain
path's loss and gradients, and really run grouped (counted), in every combination they meet in training."""

import copy

import pytest
import torch

from tests.train.test_fast import _assert_same, _batch, _fast, _lora_model, _loss_and_grads
from tunewise.train.fast import lora_groups
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


def test_groups_are_off_with_lora_dropout_or_when_switched_off(group_calls):
    assert _fast(_lora_model(dropout=0.1)).lora_groups == 0  # each projection draws its own dropout mask
    off = _fast(_lora_model(), grouped_lora=False)
    assert off.lora_groups == 0 and off.fused_lora_layers == 14


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
