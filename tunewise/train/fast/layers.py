"""What the fast path does to the decoder layers: Liger Kernel's fused RMSNorm / SwiGLU / RoPE, selective
activation checkpointing, and torch.compile."""

from __future__ import annotations

import importlib.util
import inspect
from functools import partial

# model_type → Liger's patch function for that family (decoder shape: RMSNorm, gated MLP, RoPE; the CausalLM
# forward is model → lm_head → optional soft-cap → loss).
LIGER_PATCH = {
    "llama": "apply_liger_kernel_to_llama",
    "mistral": "apply_liger_kernel_to_mistral",
    "qwen2": "apply_liger_kernel_to_qwen2",
    "qwen3": "apply_liger_kernel_to_qwen3",
    "gemma2": "apply_liger_kernel_to_gemma2",
    "gemma3_text": "apply_liger_kernel_to_gemma3_text",
}
# config activation → the gated MLP product it makes: SwiGLU (silu) or GeGLU with tanh GELU (Gemma)
GATED_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh"}
ONE_PLUS_W_NORMS = {"gemma2", "gemma3_text"}  # families whose RMSNorm scales by 1 + w, not w


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def gated_activation(config) -> str | None:
    """The MLP's gate activation as the kernels and recipes know it ("silu", "gelu_tanh"), else None."""
    return GATED_ACTIVATIONS.get(getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None))


def apply_liger_kernels(hf_model) -> None:
    """Liger's Triton RMSNorm, SwiGLU (GeGLU for Gemma) and RoPE on this model instance. Its RoPE patch replaces
    the family's module-level apply_rotary_pos_emb, so it reaches every model of that family built in this
    process. The loss is ours (tunewise.train.fast.loss), so Liger's own forward patch stays off."""
    import liger_kernel.transformers as lk  # optional

    patch = getattr(lk, LIGER_PATCH[hf_model.config.model_type])
    # Gemma's patches name their MLP switch geglu; Liger's GeGLU kernel is the tanh GELU only
    mlp = "geglu" if "geglu" in inspect.signature(patch).parameters else "swiglu"
    want = "gelu_tanh" if mlp == "geglu" else "silu"
    patch(
        rope=True,
        rms_norm=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
        model=hf_model,
        **{mlp: gated_activation(hf_model.config) == want},
    )


def family_limits(hf_model) -> dict[str, str]:
    """Components that stay off for this model's family, each with the reason (FastPath.describe() says them)."""
    cfg, off = hf_model.config, {}
    if cfg.model_type in ONE_PLUS_W_NORMS:
        off["torch RMSNorm"] = "its norms compute x·(1 + w) in fp32, as Liger's gemma-mode norm does"
    impl = getattr(cfg, "_attn_implementation", None)
    if impl != "sdpa":
        off["SDPA backend"] = f"attention runs {impl}" + (
            ", SDPA cannot soft-cap attention logits" if getattr(cfg, "attn_logit_softcapping", None) else "")
    if gated_activation(cfg) is None:
        act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None)
        off["elementwise recompute"] = f"no recipe for the MLP activation {act!r}"
    return off


def _torch_rms_norm(norm, original, x):
    if x.dtype != norm.weight.dtype:  # e.g. fp32 norms of a k-bit model: the forward it had (Liger's, with
        return original(x)  # kernels on, which casts as the model does without keeping fp32 copies)
    return torch_rms_norm(norm, x)


def torch_rms_norm(norm, x):
    """torch's fused RMSNorm (one kernel each way on CUDA, no weight gradient computed for a frozen weight),
    called as the aten op so that autocast leaves it in the input's dtype, as the model's own norm is."""
    import torch  # heavy

    return torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], norm.weight, norm.variance_epsilon)[0]


def use_torch_rms_norm(hf_model) -> int:
    """Every RMSNorm of the model (the decoder layers' and the final one) through torch's fused kernel, per
    instance. Why not Liger's here: its Python launcher costs several times an aten op's host time, and the
    LoRA fast path is host-bound (bench/results/train_speed.md, "Where the time goes"). Returns how many norms."""
    import torch  # heavy

    if not hasattr(torch.ops.aten, "_fused_rms_norm"):  # torch < 2.8: Liger's stays
        return 0
    count = 0
    for module in hf_model.modules():
        if getattr(module, "offset", 0.0):  # Liger's patch of an x·(1 + w) norm (Gemma): the aten op has no offset
            continue
        if type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon") and \
                getattr(module, "weight", None) is not None:
            module.forward = partial(_torch_rms_norm, module, module.forward)
            module._tw_torch_rms = True
            count += 1
    return count


def decoder_layers(hf_model) -> list:
    return list(hf_model.model.layers)


def enable_checkpointing(hf_model, fraction: float, avoid: frozenset = frozenset(), rng: bool = True) -> int:
    """Activation checkpointing on round(fraction × layers) decoder layers, spread evenly over the layers not in
    `avoid` (those offload.py takes); returns how many. Every non-checkpointed layer keeps its activations
    (memory) and skips its forward recompute (time). rng False: the recompute does not save and restore the RNG
    state (for layers that draw no random numbers, as graphs.py captures them: no generator calls in the capture)."""
    kwargs = {"use_reentrant": False} if rng else {"use_reentrant": False, "preserve_rng_state": False}
    if hasattr(hf_model, "activation_checkpointing_enable"):  # transformers >= 5.2x renamed it
        hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    layers = decoder_layers(hf_model)
    rest = [i for i in range(len(layers)) if i not in avoid]
    n = min(round(fraction * len(layers)), len(rest))
    chosen = {rest[i] for i in range(len(rest)) if (i + 1) * n // len(rest) > i * n // len(rest)}
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i in chosen
    return len(chosen)


def compile_layers(hf_model, mode: str = "default") -> int:
    """torch.compile each decoder layer in place (one graph reused by all: parameters are graph inputs).
    A layer that fails to compile runs eagerly instead (dynamo's suppress_errors) and says so in its log."""
    import torch._dynamo  # heavy

    torch._dynamo.config.suppress_errors = True
    layers = decoder_layers(hf_model)
    for layer in layers:
        layer.compile(mode=None if mode == "default" else mode)
    return len(layers)


def prefer_sdpa_backend(hf_model, backend: str) -> int:
    """Run every decoder layer's forward (and its checkpointed recompute, which calls the same forward) with
    `backend` first in SDPA's priority order. Per layer, not process-wide: other models keep torch's choice.
    Returns how many layers."""
    from torch.nn.attention import SDPBackend, sdpa_kernel  # heavy

    first = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
    rest = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    order = [first] + [b for b in rest if b != first]
    layers = decoder_layers(hf_model)
    for layer in layers:
        forward = layer.forward

        def wrapped(*args, _forward=forward, **kwargs):
            with sdpa_kernel(order, set_priority=True):
                return _forward(*args, **kwargs)

        layer.forward = wrapped
    return len(layers)
