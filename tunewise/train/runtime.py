"""Where and how a run executes: device, attention kernel, packing, and the memory guards."""

from __future__ import annotations

import importlib.util
import os

import torch

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.models import sdpa_exact
from tunewise.models.estimate import Estimate
from tunewise.train.distributed import local_rank


class TrainError(TunewiseError):
    exit_code = 1


def attention_implementation(want: str, device: str, model_class) -> tuple[str, str]:
    """model.attn_implementation resolved for a transformers model class on `device`: (implementation, why it
    runs, "" for sdpa). auto: flash_attention_2 on CUDA when installed; for a class whose attention SDPA does not
    compute (sdpa_exact: transformers' _supports_sdpa false, or soft-capped attention logits: Gemma 2) FlexAttention
    on CUDA when the class supports it (the soft-cap in its kernel, no seq² tensors) and eager elsewhere; else
    sdpa."""
    if want != "auto":
        if want == "flex_attention" and device != "cuda":
            raise TrainError(f"model.attn_implementation: flex_attention needs CUDA (FlexAttention has no backward "
                             f"on {device}); use auto or eager")
        return want, "" if want == "sdpa" else "model.attn_implementation"
    if device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2", "auto: CUDA and flash_attn installed"
    if sdpa_exact(model_class):
        return "sdpa", ""
    name = getattr(model_class, "__name__", "this model")
    if not getattr(model_class, "_supports_flex_attn", False):
        return "eager", f"auto: transformers' {name} supports neither SDPA nor FlexAttention"
    if device == "cuda":
        return "flex_attention", (f"auto: transformers' {name} cannot run SDPA; FlexAttention keeps attention "
                                  "O(seq) in memory where eager keeps seq² scores per layer")
    return "eager", f"auto: transformers' {name} cannot run SDPA, and FlexAttention has no backward on {device}"


def use_packing(cfg: RunConfig, device: str, attn: str) -> bool:
    """auto: on only where attention is truly variable-length (flash_attention_2 on CUDA). With sdpa/eager,
    transformers packs through a block-diagonal mask over the whole packed row, which is exact but costs
    O(total_tokens^2) attention; measured on CPU it is slower than padding (docs/training.md)."""
    if cfg.train.packing == "auto":
        return device == "cuda" and attn == "flash_attention_2"
    return bool(cfg.train.packing)


def pad_multiple(setting, device: str) -> int:
    """train.pad_to_multiple_of as a number: auto pads to multiples of 64 tokens on CUDA, where each new batch shape
    costs attention set-up, and not at all elsewhere (CPU kernels have none; padding would be wasted work)."""
    return (64 if device == "cuda" else 1) if setting == "auto" else setting


def device_memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.get_device_properties(local_rank()).total_memory / 1024**3
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


def memory_breakdown(est: Estimate) -> str:
    return (f"estimated peak {est.peak_memory_gib:.1f} GiB = weights {est.weights_gib:.1f} + grads "
            f"{est.grads_gib:.1f} + optimizer {est.optimizer_gib:.1f} + activations {est.activations_gib:.1f}")


OPTIONS = ("options: smaller train.batch_size (raise train.grad_accum to keep the global batch), "
           "train.gradient_checkpointing: true, a smaller model.max_length, or train.method: qlora")


def check_fits(est: Estimate, force: bool) -> None:
    if force or est.fits:
        return
    raise TrainError(f"the run will not fit: {memory_breakdown(est)} > {est.device_memory_gib:.1f} GiB on "
                     f"{est.device}; {OPTIONS}; or --force to try anyway")


def oom_message(est: Estimate | None) -> str:
    where = f" ({memory_breakdown(est)}, device {est.device_memory_gib:.1f} GiB)" if est else ""
    return f"CUDA out of memory{where}; {OPTIONS}"
