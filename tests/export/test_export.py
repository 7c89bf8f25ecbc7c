import pytest
import torch

from tests.fixtures.runs import fake_run, registered_pickled_adapter
from tunewise.config import RegistryConfig
from tunewise.export import export_model
from tunewise.registry import Registry


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_merged_model_equals_base_plus_adapter(tmp_path, tiny_model_dir, tiny_adapters):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunewise.models import load_model

    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    reg.register_run(fake_run(tmp_path, "clf", [True] * 40, adapter=tiny_adapters["clf"],
                              base_path=str(tiny_model_dir)))
    res = export_model(reg, "clf", tmp_path / "export")
    assert res.model == "clf:v1" and (res.merged_dir / "model.safetensors").is_file()
    assert not list(res.merged_dir.glob("*.bin")) and (res.merged_dir / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(res.merged_dir, use_safetensors=True)
    peft = PeftModel.from_pretrained(load_model(tiny_model_dir, "cpu"), tiny_adapters["clf"])
    base = load_model(tiny_model_dir, "cpu")
    ids = [5, 9, 17, 30, 2]
    assert torch.allclose(logits(merged, ids), logits(peft, ids), atol=1e-5)
    assert not torch.allclose(logits(merged, ids), logits(base, ids), atol=1e-3)  # the adapter is in there


# F32 only: an exact round trip catches any tensor-layout slip; F16 is the same path plus a cast (~20 s more).
@pytest.mark.parametrize("f16", [False])
def test_gguf_round_trip_through_transformers(tmp_path, f16):
    """A Llama with SmolLM2's real BPE tokenizer → GGUF → transformers reads back the same model and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tunewise.export.gguf_writer import write_gguf
    from tunewise.models.catalogue import embedded_gguf

    src = embedded_gguf("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    folder = tmp_path / "merged"
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    out = write_gguf(model, folder, tmp_path / "m.gguf", f16=f16)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    back_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    text = "Hello world, the bank's profit rose 7%!"
    ids = tok(text)["input_ids"]
    assert back_tok(text)["input_ids"] == ids
    assert back_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert torch.allclose(logits(back, ids), logits(model, ids), atol=1e-2 if f16 else 1e-5)


def test_a_pickled_adapter_is_not_exported(tmp_path, tiny_model_dir, tiny_adapters):
    from tunewise.errors import ModelError

    reg, _ = registered_pickled_adapter(tmp_path, tiny_model_dir, tiny_adapters["clf"])
    with pytest.raises(ModelError, match="only adapter_model.bin"):
        export_model(reg, "clf", tmp_path / "export")
