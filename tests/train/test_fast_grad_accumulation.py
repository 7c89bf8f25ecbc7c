"""Adapter gradients added into .grad by the fast path's own GEMMs (lora.add_grad): the same gradients as
plain PEFT over several micro-steps, and autograd's own accumulation wherever it must stay (autograd.grad,
backward(inputs=...), gradient hooks, a deep copy)."""

import copy

import pytest
import torch

from tests.train.test_fast import TOL, _batch, _fast, _lora_model, _rel
from tunewise.train.tokenize import PadCollator


def _accumulated(model, batches, **kwargs) -> dict:
    model.train()
    model.zero_grad(set_to_none=True)
    for batch in batches:
        model(**batch).loss.backward(**kwargs)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _pair(**fast):
    plain = _lora_model()
    quick = copy.deepcopy(plain)
    _fast(quick, **fast)
    return plain, quick


def _batches():
    return [PadCollator(pad_id=3)(_batch(seed=s)) for s in (31, 32, 33)]


@pytest.mark.parametrize("grouped", [True, False])
def test_three_micro_steps_accumulate_the_plain_gradients(grouped):
    plain, quick = _pair(grouped_lora=grouped)
    want, got = _accumulated(plain, _batches()), _accumulated(quick, _batches())
    assert want.keys() == got.keys() and len(want) == 2 * 2 * 7
    for name in want:
        assert _rel(got[name], want[name]) < TOL, name
    if grouped:  # the grouped A matrices' gradients are row blocks of one buffer, added to by one GEMM
        attn = quick.get_base_model().model.layers[0].self_attn
        grads = [getattr(attn, n).lora_A["default"].weight.grad for n in ("q_proj", "k_proj", "v_proj")]
        assert grads[0]._base is not None and all(g._base is grads[0]._base for g in grads)


@pytest.mark.parametrize("grouped", [True, False])
def test_micro_steps_with_lora_dropout_accumulate_peft_gradients(grouped):
    """Each micro-step draws fresh masks; under one seed they are PEFT's, and so is the sum."""
    plain = _lora_model(dropout=0.1)
    quick = copy.deepcopy(plain)
    _fast(quick, grouped_lora=grouped)
    torch.manual_seed(5)
    want = _accumulated(plain, _batches())
    torch.manual_seed(5)
    got = _accumulated(quick, _batches())
    assert want.keys() == got.keys() and len(want) == 2 * 2 * 7
    assert all(_rel(got[n], want[n]) < TOL for n in want)


def test_autograd_grad_and_backward_inputs_leave_grad_alone():
    plain, quick = _pair()
    batch = _batches()[0]
    params = [p for p in quick.parameters() if p.requires_grad]
    quick.train()
    got = torch.autograd.grad(quick(**batch).loss, params)
    assert all(p.grad is None for p in params)
    want = torch.autograd.grad(plain(**batch).loss, [p for p in plain.parameters() if p.requires_grad])
    assert all(_rel(g, w) < TOL for g, w in zip(got, want))
    embed = quick.get_base_model().model.embed_tokens.weight
    embed.requires_grad_(True)
    quick(**batch).loss.backward(inputs=[embed])
    assert embed.grad is not None and all(p.grad is None for p in params)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_hooked_adapter_gets_its_gradient_through_autograd(when):
    """Hooks registered before the first step or after it (when the fast path has cached its plans)."""
    plain, quick = _pair()
    attn = quick.get_base_model().model.layers[1].self_attn
    seen = []
    if when == "after":
        _accumulated(quick, _batches()[:1])
    for proj in (attn.o_proj, attn.q_proj):  # a single projection and a grouped one
        proj.lora_B["default"].weight.register_hook(lambda g: seen.append(1))
        proj.lora_A["default"].weight.register_hook(lambda g: seen.append(1))
    want, got = _accumulated(plain, _batches()[:2]), _accumulated(quick, _batches()[:2])
    assert len(seen) == 2 * 4 and all(_rel(got[n], want[n]) < TOL for n in want)


def test_a_deep_copy_accumulates_into_its_own_parameters():
    _, quick = _pair()
    _accumulated(quick, _batches()[:1])  # plans (and their autograd nodes) built on the original
    twin = copy.deepcopy(quick)
    twin.zero_grad(set_to_none=True)
    quick.zero_grad(set_to_none=True)
    got = _accumulated(twin, _batches()[:2])
    assert all(p.grad is None for p in quick.parameters())
    want = _accumulated(quick, _batches()[:2])
    assert all(_rel(got[n], want[n]) < TOL for n in want)


def test_a_base_weight_unfrozen_after_the_first_step_gets_its_gradient():
    """The LoRA plans are cached per adapter state; unfreezing a base weight must still send it a gradient
    (through PEFT's own forward, since the fused function treats base weights as frozen)."""
    plain, quick = _pair()
    _accumulated(quick, _batches()[:1])
    for model in (plain, quick):  # a single projection and a grouped one
        layer = model.get_base_model().model.layers[0]
        for proj in (layer.mlp.down_proj, layer.self_attn.k_proj):
            proj.base_layer.weight.requires_grad_(True)
    want, got = _accumulated(plain, _batches()[:2]), _accumulated(quick, _batches()[:2])
    assert sum("base_layer.weight" in n for n in got) == 2
    assert want.keys() == got.keys() and all(_rel(got[n], want[n]) < TOL for n in want)
