"""Write a merged Llama-family model as a GGUF file for llama.cpp / Ollama.

llama.cpp's own converter (convert_hf_to_gguf.py) ships with llama.cpp, not on PyPI, so this uses the `gguf`
package's GGUFWriter directly with its official HF → GGUF tensor name map, and does the one transform that
converter does for Llama: the rotary Q/K row permutation. Weights are written as F32 or F16 (no quantisation:
llama.cpp's `llama-quantize` does that from this file). The round trip is tested by loading the file back
with transformers (`gguf_file=`), which undoes the permutation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tunewise.errors import ModelError

SUPPORTED = {"LlamaForCausalLM"}


def _permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    # The inverse of transformers' _reverse_permute_weights (HF rotary halves → GGML interleaved pairs).
    if n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_config(writer, cfg, file_type) -> None:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(file_type)


def _add_tokenizer(writer, folder: Path, vocab_size: int) -> None:
    import gguf  # heavy

    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if spec["model"]["type"] != "BPE":
        raise ModelError(f"{folder}: GGUF export supports byte-level BPE tokenizers (got {spec['model']['type']})")
    vocab = dict(spec["model"]["vocab"])
    special = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    vocab.update({t["content"]: t["id"] for t in spec.get("added_tokens", [])})
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for tok, i in vocab.items():
        if i < vocab_size:
            tokens[i] = tok
            types[i] = gguf.TokenType.CONTROL if tok in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id), ("unk_token", writer.add_unk_token_id)):
        tok = cfg.get(key)
        tok = tok.get("content") if isinstance(tok, dict) else tok
        if tok in vocab:
            add(vocab[tok])
    template = cfg.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template:
        writer.add_chat_template(template)


def write_gguf(model, folder: Path, out: Path, f16: bool = False, tokenizer: bool = True) -> Path:
    """`model`: a merged transformers Llama model; `folder`: where its tokenizer files are."""
    import gguf  # heavy

    cfg = model.config
    if type(model).__name__ not in SUPPORTED:
        raise ModelError(f"GGUF export supports {', '.join(sorted(SUPPORTED))}, not {type(model).__name__}")
    file_type = gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(out.stem)
    _add_config(writer, cfg, file_type)
    if tokenizer:
        _add_tokenizer(writer, Path(folder), cfg.vocab_size)
    tied = getattr(cfg, "tie_word_embeddings", False)
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # tied: llama.cpp (and transformers) reuse token_embd when output.weight is absent
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ModelError(f"GGUF export: no llama.cpp name for tensor {name}")
        data = tensor.detach().float().cpu().numpy()
        if name.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_attention_heads, cfg.num_key_value_heads)
        # llama.cpp keeps 1-D tensors (norms) in F32 whatever the file type.
        writer.add_tensor(new, data.astype(np.float16) if f16 and data.ndim > 1 else data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
