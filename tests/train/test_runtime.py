"""Which attention a run gets (model.attn_implementation): auto picks FlexAttention on CUDA for a model transformers
cannot run with SDPA (Gemma 2, whose soft-capped attention logits SDPA cannot compute) and eager on CPU, where
FlexAttention has no backward; FlexAttention computes Gemma 2's soft-capped attention as eager does."""

import importlib.util

import pytest
import torch
from transformers import Gemma2ForCausalLM, GPT2LMHeadModel, LlamaForCausalLM

from tunewise.testing import build_family_model
from tunewise.train.runtime import TrainError, attention_implementation

# Caps small enough to change the logits by far more than the tolerance, with weights large enough for that.
CAPPED = {"initializer_range": 0.1, "attn_logit_softcapping": 0.5}


@pytest.fixture
def flash_attn(monkeypatch):
    """Whether flash_attn looks installed: set installed[0]."""
    installed, find_spec = [False], importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if installed[0] else None) if name == "flash_attn"
                        else find_spec(name, *a))
    return installed


def test_auto_picks_flex_attention_on_cuda_and_eager_on_cpu_for_gemma2_and_sdpa_for_llama(flash_attn):
    assert attention_implementation("auto", "cuda", Gemma2ForCausalLM)[0] == "flex_attention"
    assert attention_implementation("auto", "cpu", Gemma2ForCausalLM)[0] == "eager"
    assert attention_implementation("auto", "cuda", LlamaForCausalLM) == ("sdpa", "")
    assert attention_implementation("auto", "cpu", LlamaForCausalLM) == ("sdpa", "")
    attn, why = attention_implementation("auto", "cuda", Gemma2ForCausalLM)
    assert "Gemma2ForCausalLM cannot run SDPA" in why and "O(seq)" in why
    assert "no backward on cpu" in attention_implementation("auto", "cpu", Gemma2ForCausalLM)[1]
    flash_attn[0] = True  # flash_attn first on CUDA, whatever the model (Gemma 2's soft-cap included)
    for cls in (Gemma2ForCausalLM, LlamaForCausalLM):
        assert attention_implementation("auto", "cuda", cls)[0] == "flash_attention_2"
    assert attention_implementation("auto", "cpu", Gemma2ForCausalLM)[0] == "eager"


def test_the_class_flags_decide_not_the_family(flash_attn):
    class NoSdpa(LlamaForCausalLM):
        _supports_sdpa = False

    class Neither(GPT2LMHeadModel):
        _supports_sdpa, _supports_flex_attn = False, False

    assert attention_implementation("auto", "cuda", NoSdpa)[0] == "flex_attention"
    assert attention_implementation("auto", "cuda", Neither) == (
        "eager", "auto: transformers' Neither supports neither SDPA nor FlexAttention")


def test_explicit_values_are_kept_and_flex_attention_needs_cuda():
    assert attention_implementation("eager", "cuda", LlamaForCausalLM) == ("eager", "model.attn_implementation")
    assert attention_implementation("sdpa", "cpu", LlamaForCausalLM) == ("sdpa", "")
    assert attention_implementation("flex_attention", "cuda", LlamaForCausalLM)[0] == "flex_attention"
    with pytest.raises(TrainError, match="flex_attention needs CUDA"):
        attention_implementation("flex_attention", "cpu", Gemma2ForCausalLM)


def test_flex_attention_gives_gemma2_eager_logits_soft_cap_included():
    """Forward only (FlexAttention has no CPU backward), float32, a padded batch and Gemma 2's sliding and global
    layers: flex's logits are eager's within 1e-5, and they are not eager's without the soft-cap."""
    model = build_family_model("gemma2", 97, **CAPPED).eval()
    assert model.config._attn_implementation == "eager"  # transformers' default: SDPA cannot soft-cap
    ids = torch.randint(4, 97, (2, 14), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    with torch.no_grad():
        eager = model(input_ids=ids, attention_mask=mask).logits
        for layer in model.model.layers:
            layer.self_attn.attn_logit_softcapping = None
        uncapped = model(input_ids=ids, attention_mask=mask).logits
        for layer in model.model.layers:
            layer.self_attn.attn_logit_softcapping = CAPPED["attn_logit_softcapping"]
        model.set_attn_implementation("flex_attention")
        flex = model(input_ids=ids, attention_mask=mask).logits
    scale = eager.abs().max()
    assert (flex - eager).abs().max() < 1e-5 * scale
    assert (flex - uncapped).abs().max() > 100 * 1e-5 * scale


def test_pad_multiple_is_64_on_cuda_under_auto_and_what_the_config_says_otherwise():
    from tunewise.config import TrainConfig
    from tunewise.errors import ConfigError
    from tunewise.train.runtime import pad_multiple

    assert pad_multiple("auto", "cuda") == 64 and pad_multiple("auto", "cpu") == 1
    assert pad_multiple(8, "cuda") == 8 and pad_multiple(1, "cuda") == 1
    with pytest.raises((ValueError, ConfigError)):
        TrainConfig(pad_to_multiple_of=0)
