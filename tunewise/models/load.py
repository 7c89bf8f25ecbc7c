"""Load a resolved model folder safely: safetensors only, no remote code."""

from __future__ import annotations

from pathlib import Path

import torch


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str) -> torch.dtype:
    # bf16 where the hardware does it natively; float32 on CPU, where bf16 matmuls are slower and less exact.
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer  # heavy

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path, device: str | None = None, dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM  # heavy

    device = device or pick_device()
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or pick_dtype(device), use_safetensors=True, trust_remote_code=False
    )
    return model.to(device)
