"""The fast path on every decoder family it covers gives plain transformers + PEFT's loss and gradients (float32,
CPU): Llama, Mistral, Qwen2 (q/k/v biases, grouped), Qwen3 (q/k norms), Gemma 2 (soft-capped attention and final logits,
x·(1 + w) norms, GeGLU, scaled embeddings, pre/post feed-forward norms) and Gemma 3 (sliding and global layers,
q/k norms). Families it does not cover train on the plain path, said in one log line."""

import copy

import pytest
import torch

from tests.train.test_fast import VOCAB, _assert_same, _batch, _fast, _loss_and_grads, _rel
from tunewise.config import FastConfig, LoraConfig, TrainConfig
from tunewise.testing import FAMILIES, build_family_model
from tunewise.train.fast import SUPPORTED, apply_fast_path, decide, lora_groups
from tunewise.train.fast import recompute as rc
from tunewise.train.fast.layers import family_limits, use_torch_rms_norm
from tunewise.train.fast.loss import causal_lm_loss
from tunewise.train.lora import apply_lora
from tunewise.train.tokenize import IGNORE, PadCollator

# Caps small enough to change the loss and gradients by far more than the tolerance, with weights large enough
# for that (initializer_range 0.1).
CAPS = {"gemma2": {"final_logit_softcapping": 1.0, "attn_logit_softcapping": 0.5},
        "gemma3_text": {"final_logit_softcapping": 1.5}}


def _lora_model(model_type: str, seed: int = 0, dropout: float = 0.0, **overrides):
    base = build_family_model(model_type, VOCAB, seed, initializer_range=0.1, **{**CAPS.get(model_type, {}),
                                                                                **overrides})
    model = apply_lora(base, LoraConfig(r=4, alpha=8, dropout=dropout))
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, which would make every A gradient zero
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return model


@pytest.fixture
def recipe_calls(monkeypatch):
    """Gated-MLP products computed (forward, checkpoint rerun and recipe) and norm outputs recomputed."""
    calls = {"act_mul": 0, "norm_value": 0}
    act_mul, norm_value = rc.act_mul, rc._norm_value

    def counting_act_mul(*args):
        calls["act_mul"] += 1
        return act_mul(*args)

    def counting_norm_value(*args):
        calls["norm_value"] += 1
        return norm_value(*args)

    monkeypatch.setattr(rc, "act_mul", counting_act_mul)
    monkeypatch.setattr(rc, "_norm_value", counting_norm_value)
    return calls


def test_every_covered_family_has_a_tiny_model():
    assert set(FAMILIES) == SUPPORTED


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_every_component_gives_the_plain_loss_and_gradients(model_type, recipe_calls):
    """Fused and grouped LoRA, chunked loss, checkpointing on 1 of 2 layers and elementwise recipes in the
    other, on a padded batch with ignored labels: loss and every adapter gradient within 1e-3 of plain PEFT."""
    plain = _lora_model(model_type)
    fast = copy.deepcopy(plain)
    report = _fast(fast, gc=True, checkpoint_layers=0.5, recompute_elementwise=True)
    assert (report.loss, report.fused_lora_layers, report.checkpointed_layers, report.recompute_layers) == (
        "chunked", 2 * 7, 1, 2)
    assert report.lora_groups == 4  # per layer q/k/v and gate/up (Qwen2's biased q/k/v too)
    assert "LoRA group" not in (report.family_off or {})
    batch = PadCollator(pad_id=3)(_batch(seed=21))
    want = _loss_and_grads(plain, batch)
    got = _loss_and_grads(fast, batch)
    assert len(want[1]) == 2 * 7 * 2  # every A and B of every adapted projection
    _assert_same(want, got)
    # layer 0 keeps recipes: its MLP product and its two norm outputs are recomputed once in backward;
    # layer 1 is checkpointed: its MLP product is computed again by the checkpoint's rerun instead
    assert recipe_calls == {"act_mul": 4, "norm_value": 2}


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_qwen2_groups_its_biased_qkv_with_peft_loss_and_gradients(dropout, monkeypatch):
    """Qwen2's q/k/v carry biases (drawn nonzero): grouped, each member adds its own frozen bias once; loss and
    every adapter gradient are PEFT's, with LoRA dropout drawn in PEFT's order too; the biases get no gradient."""
    plain = _lora_model("qwen2", dropout=dropout)
    fast = copy.deepcopy(plain)
    attn = fast.get_base_model().model.layers[0].self_attn
    assert all(getattr(attn, n).base_layer.bias.abs().min() > 0 for n in ("q_proj", "k_proj", "v_proj"))
    report = _fast(fast)
    assert report.lora_groups == 4 and "LoRA groups 4" in report.describe() and report.family_off is None
    calls = []
    apply = lora_groups.GroupedLora.apply
    monkeypatch.setattr(lora_groups.GroupedLora, "apply",
                        lambda *a: calls.append((len(a[3]), a[7] is not None)) or apply(*a))
    batch = PadCollator(pad_id=3)(_batch(seed=24))
    want = _loss_and_grads(plain, batch)
    got = _loss_and_grads(fast, batch)
    _assert_same(want, got)
    assert sorted(calls) == [(2, False), (2, False), (3, True), (3, True)]  # q/k/v with their biases
    assert all(p.grad is None for n, p in fast.named_parameters() if n.endswith("bias"))


def test_qwen2_family_keeps_nothing_off_for_its_biases():
    assert family_limits(build_family_model("qwen2", VOCAB)) == {}


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_the_chunked_loss_soft_caps_the_logits_as_the_model_does(model_type):
    """Without the cap the fast loss would be off by far more than the tolerance: the parity test sees it."""
    plain = _lora_model(model_type)
    fast = copy.deepcopy(plain)
    _fast(fast)
    batch = PadCollator(pad_id=3)(_batch(seed=22))
    want, got = _loss_and_grads(plain, batch), _loss_and_grads(fast, batch)
    _assert_same(want, got)
    fast.get_base_model()._tunewise_fast_loss["softcap"] = None
    uncapped = _loss_and_grads(fast, batch)[0]
    assert abs(uncapped.item() - want[0].item()) / want[0].item() > 10 * 1e-3


def test_gemma2_attention_soft_capping_matters_here():
    """The attention cap is the model's own (eager attention, untouched by the fast path); this checks the
    parity test's model is one where dropping it would show."""
    batch = PadCollator(pad_id=3)(_batch(seed=23))
    capped = _loss_and_grads(_lora_model("gemma2"), batch)[1]
    uncapped = _loss_and_grads(_lora_model("gemma2", attn_logit_softcapping=None), batch)[1]
    assert max(_rel(uncapped[n], capped[n]) for n in capped) > 10 * 1e-3


def test_chunked_loss_with_softcap_matches_capped_cross_entropy_in_float64():
    g = torch.Generator().manual_seed(12)
    hidden = torch.randn(2, 9, 8, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(33, 8, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.randint(0, 33, (2, 9), generator=g)
    labels[1, :3] = IGNORE
    logits = 2.0 * torch.tanh(hidden @ weight.t() / 2.0)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 33), labels[:, 1:].reshape(-1),
                                            ignore_index=IGNORE)
    got = causal_lm_loss(hidden, weight, labels, chunk_tokens=4, softcap=2.0)
    assert abs(got.item() - ref.item()) < 1e-6  # the loss runs in fp32
    for a, b in zip(torch.autograd.grad(got, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight))):
        assert ((a - b).norm() / b.norm()).item() < 1e-6


def test_gemma_norms_keep_their_own_rule_and_the_reasons_are_said():
    """x·(1 + w) norms are never handed to torch's fused RMSNorm (it computes x·w), also not once Liger has
    patched them (its patch sets variance_epsilon and offset 1); FastPath.describe() names what is off."""
    hf = build_family_model("gemma2", VOCAB)
    norm = hf.model.layers[0].input_layernorm
    x = torch.randn(2, 3, 64)
    before = norm(x)
    assert use_torch_rms_norm(hf) == 0
    norm.variance_epsilon, norm.offset = norm.eps, 1.0  # what Liger's gemma patch leaves on the module
    assert use_torch_rms_norm(hf) == 0 and torch.equal(norm(x), before)
    limits = family_limits(hf)
    assert "1 + w" in limits["torch RMSNorm"] and "soft-cap" in limits["SDPA backend"]
    assert family_limits(build_family_model("llama", VOCAB)) == {}


def test_an_uncovered_family_trains_on_the_plain_path_with_one_log_line(capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = apply_lora(GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2)),
                       LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["c_attn"]))
    report = apply_fast_path(model, TrainConfig(fast={"enabled": True}), "cpu")
    lines = capsys.readouterr().err.strip().splitlines()
    assert not report.enabled and "forward" not in vars(model.get_base_model())
    assert lines == ["tunewise: plain path (model type 'gpt2' has no fast path; it covers gemma2, gemma3_text, "
                     "llama, mistral, qwen2, qwen3)"]
    assert decide(FastConfig(), "cuda", "gemma2")[0] and decide(FastConfig(), "cuda", "gemma3_text")[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_right_padding_needs_no_mask_under_causal_attention(model_type, attn):
    """What train.fast.causal_padding relies on: a right-padded batch gives the same loss and adapter gradients
    without its padding mask, in every covered family (Gemma 3's sliding layers included); left padding does not."""
    if model_type == "gemma2" and attn == "sdpa":
        pytest.skip("transformers has no SDPA attention for Gemma 2")
    model = _lora_model(model_type)
    model.set_attn_implementation(attn)
    batch = PadCollator(pad_id=3)(_batch())
    assert batch["attention_mask"].eq(0).any()  # there is padding to leave unmasked
    unmasked = {k: v for k, v in batch.items() if k != "attention_mask"}
    _assert_same(_loss_and_grads(model, batch), _loss_and_grads(model, unmasked))
    # the same rows padded on the left: the padding now comes before the tokens and the mask is needed
    shift = (batch["attention_mask"] == 0).sum(1)
    left = {k: torch.stack([row.roll(int(s)) for row, s in zip(v, shift)]) for k, v in batch.items()}
    loss_masked, _ = _loss_and_grads(model, left)
    loss_unmasked, _ = _loss_and_grads(model, {k: v for k, v in left.items() if k != "attention_mask"})
    assert abs(loss_unmasked.item() - loss_masked.item()) > 1e-3 * abs(loss_masked.item())
