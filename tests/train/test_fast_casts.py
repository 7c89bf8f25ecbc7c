"""Cached adapter casts (tunewise.train.fast.casts): one cast per optimizer step, never a stale one."""

import copy

import pytest
import torch

from tests.train.test_fast import TOL, _batch, _fast, _lora_model, _rel
from tunewise.train.fast import casts
from tunewise.train.tokenize import PadCollator


@pytest.fixture
def made(monkeypatch):
    count = [0]
    make = casts._make

    def counting(tensors, dtype, scale=1.0):
        count[0] += 1
        return make(tensors, dtype, scale)

    monkeypatch.setattr(casts, "_make", counting)
    return count


def _bf16_adapters(model):
    """The GPU setting: bf16 base under autocast, fp32 adapters, so every adapter use needs a cast."""
    model.get_base_model().to(torch.bfloat16)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    return model


def _step(model, batch, opt=None):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.item()


@pytest.mark.parametrize("fused", [True, False])
def test_training_with_adamw_uses_the_updated_weights_every_step(fused, monkeypatch):
    """Fused AdamW updates weights without bumping their version counter: only the optimizer step hook
    tells the cache they changed. Losses and weights are bit-identical to the same path casting afresh."""
    from tunewise.train.fast import lora, lora_groups

    start = _bf16_adapters(_lora_model())
    batch = PadCollator(pad_id=3)(_batch(seed=21))
    runs = []
    for cached in (True, False):
        if not cached:
            for module in (lora, lora_groups):
                monkeypatch.setattr(module, "cast", lambda _cache, _slot, tensors, dtype, scale=1.0:
                                    casts._make(tensors, dtype, scale))
        model = copy.deepcopy(start)
        _fast(model, loss="off", kernels=False)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05, fused=fused)
        model.train()
        losses = [_step(model, batch, opt) for _ in range(4)]
        runs.append((losses, [p.detach().clone() for p in model.parameters() if p.requires_grad]))
    (losses, weights), (want_losses, want_weights) = runs
    assert losses == want_losses and len(set(losses)) == 4
    assert all(torch.equal(w, v) for w, v in zip(weights, want_weights))


def test_one_cast_per_adapter_per_optimizer_step(made):
    model = _bf16_adapters(_lora_model())
    report = _fast(model, loss="off", kernels=False)
    batch = PadCollator(pad_id=3)(_batch(seed=22))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01, fused=True)
    model.train()
    _step(model, batch)
    per_step = made[0]
    # grouped q/k/v and gate/up: one stacked A and a B each; o and down: an A and a B each; per layer
    assert per_step == 2 * ((1 + 3) + (1 + 2) + 2 * 2) and report.lora_groups == 4
    _step(model, batch)  # a second micro-step of the same optimizer step: every cast is cached
    assert made[0] == per_step
    opt.step()
    _step(model, batch)
    assert made[0] == 2 * per_step
    with torch.no_grad():  # an in-place edit outside the optimizer bumps the version counter
        model.get_base_model().model.layers[0].self_attn.o_proj.lora_A["default"].weight.mul_(0.5)
    _step(model, batch)
    assert made[0] == 2 * per_step + 1
    model.eval()
    with torch.no_grad():
        model(**batch)
        model(**batch)
    assert made[0] == 2 * per_step + 1 + 2 * 2 * 14  # evaluation: nothing cached (A and B of 14 projections)


def test_cached_casts_give_the_plain_float32_gradients():
    plain = _lora_model()
    fast = copy.deepcopy(plain)
    _fast(fast)
    batch = PadCollator(pad_id=3)(_batch(seed=23))
    for m in (plain, fast):
        m.train()
        for _ in range(2):  # the second pass reads the cache
            m.zero_grad(set_to_none=True)
            loss = m(**batch).loss
            loss.backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        if p.requires_grad:
            assert _rel(q.grad, p.grad) < TOL, name
