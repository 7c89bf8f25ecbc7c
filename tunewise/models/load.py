"""Load a resolved model folder safely: safetensors only, no remote code."""

from __future__ import annotations

from pathlib import Path

import torch

from tunewise.errors import ModelError


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


def causal_lm_class(path: Path):
    """The transformers class load_model builds from `path` (its config.json alone: no weights are read)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig  # heavy

    return MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(path, trust_remote_code=False))]


def sdpa_exact(model) -> bool:
    """Whether SDPA computes this architecture's attention, for a transformers model class or instance (a PEFT
    wrapper too): transformers allows it, and the config (an instance's own, a class's default) does not soft-cap
    attention logits. Gemma 2: some transformers releases allow SDPA there and drop the cap."""
    if not getattr(model, "_supports_sdpa", True):
        return False
    if not isinstance(model, type):
        return getattr(model.config, "attn_logit_softcapping", None) is None
    try:
        config = model.config_class()
    except Exception:  # no config class, or one that needs arguments: nothing known against SDPA
        return True
    return getattr(config, "attn_logit_softcapping", None) is None


ADAPTER_WEIGHTS = "adapter_model.safetensors"
SAFE_ONLY = "tunewise loads weights from safetensors only (re-save with save_pretrained(path, safe_serialization=True))"


def pickled_only(folder: Path) -> list[str]:
    """The pickled files (*.bin) of a weights folder that has no safetensors: weights tunewise refuses, since
    unpickling can run code (peft and transformers would otherwise fall back to them)."""
    folder = Path(folder)
    return [] if list(folder.glob("*.safetensors")) else sorted(p.name for p in folder.glob("*.bin"))


def check_adapter(folder: Path) -> Path:
    """`folder`, if it holds a PEFT adapter with safetensors weights; else a one-line ModelError."""
    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise ModelError(f"{folder}: no adapter_config.json (not a PEFT adapter folder)")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        pickled = pickled_only(folder)
        raise ModelError(f"{folder}: {'only ' + ', '.join(pickled) if pickled else f'no {ADAPTER_WEIGHTS}'}; "
                         f"{SAFE_ONLY}")
    return folder


def check_full_model(folder: Path) -> Path:
    """`folder`, if it holds full model weights (config.json + safetensors); else a one-line ModelError."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no config.json (not a model folder)")
    if not list(folder.glob("*.safetensors")):
        pickled = pickled_only(folder)
        raise ModelError(f"{folder}: {'only ' + ', '.join(pickled) if pickled else 'no *.safetensors'}; {SAFE_ONLY}")
    return folder


def weights_kind(folder: Path) -> str:
    """"adapter" (a PEFT adapter folder) or "full" (full weights: a full fine-tune or a soup), checked safe."""
    if (Path(folder) / "adapter_config.json").is_file():
        check_adapter(folder)
        return "adapter"
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"{folder}: neither a PEFT adapter (adapter_config.json) nor a model folder "
                         "(config.json + safetensors)")
    check_full_model(folder)
    return "full"


def load_adapter(model, folder: Path, name: str = "default"):
    """`model` with the adapter in `folder` on it as `name` (safetensors only); a PeftModel gets one more."""
    from peft import PeftModel  # heavy

    folder = check_adapter(folder)
    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name)


def load_weights(weights: Path, base: Path, device: str | None = None, dtype: torch.dtype | None = None,
                 base_model=None):
    """A fine-tuned model from its weights folder: an adapter put on the base model (`base_model` if already
    loaded, which is then modified; else loaded from `base`), or full weights loaded alone."""
    if weights_kind(weights) == "full":
        return load_model(Path(weights), device, dtype)
    return load_adapter(base_model if base_model is not None else load_model(Path(base), device, dtype), weights)
