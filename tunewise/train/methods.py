"""The training methods: LoRA, DoRA, QLoRA (4-bit NF4 base + LoRA) and full fine-tuning."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunewise.config import TrainConfig
from tunewise.errors import ConfigError


def check_method_supported(method: str, device: str) -> None:
    if method != "qlora":
        return
    if device != "cuda":
        raise ConfigError("train.method=qlora needs a CUDA GPU (bitsandbytes 4-bit NF4); on CPU use method: lora")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("train.method=qlora needs bitsandbytes: pip install 'tunewise[gpu]'")


def load_quantized(path: Path, device_index: int, attn: str):
    """The base model in 4-bit NF4 with double quantisation and bf16 compute (the QLoRA paper's recipe)."""
    import torch  # heavy
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # heavy

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quant, dtype=torch.bfloat16, device_map={"": device_index},
        attn_implementation=attn, use_safetensors=True, trust_remote_code=False)


def apply_method(model, cfg: TrainConfig):
    """Make the right parameters trainable: adapters for lora/dora/qlora, everything for full."""
    # No KV cache in training. Besides wasting memory, a cache makes transformers skip detecting packed
    # sequences from position_ids under sdpa/eager, and packed examples then attend to each other
    # (found by tests/train/test_tokenize.py::test_packing_has_no_attention_across_examples).
    model.config.use_cache = False
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training  # heavy

    if cfg.method == "qlora":
        # Upcasts the non-quantised weights (norms, embeddings) to fp32 for stable training, as in QLoRA.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = cfg.lora
    peft_cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora.target_modules, use_dora=cfg.method == "dora",
                          task_type=TaskType.CAUSAL_LM)
    return get_peft_model(model, peft_cfg)

