"""The fast training path: the same model, loss and gradients as plain transformers + PEFT, computed with less
memory traffic and less memory. Entry point: `apply_fast_path(model, train_cfg, device) -> FastPath`.

Components, each switchable in `train.fast` and measured one at a time in bench/train_speed/:
- loss:        LM head + cross-entropy a chunk at a time, never the full logits (loss.py; Liger's on CUDA)
- kernels:     Liger Kernel's Triton SwiGLU and RoPE (CUDA, when liger-kernel is installed), with torch's
               fused RMSNorm (or Liger's: rms_norm)
- fused_lora:  LoRA layers as one autograd function with the scale and add in the GEMM epilogue (lora.py), QLoRA's
               4-bit layers included (dequantised on use, quantized.py)
- grouped_lora: q/k/v and gate/up LoRA projections as one group each (lora_groups.py)
- checkpoint_layers: activation checkpointing on a share of the decoder layers (train.gradient_checkpointing)
- recompute_elementwise: recipes instead of the norm outputs and SwiGLU product (recompute.py)
- micro_batch_size: the device batch in several micro-steps
- compile:     torch.compile of each decoder layer
- offload_kept_layers: some kept layers' saved tensors in pinned CPU memory, copied beside the compute
               (offload.py)
- cuda_graphs: the decoder stack's forward and backward replayed as two CUDA graphs (graphs.py)
- offload_activations / tile_mlp_tokens: long context, checkpointed layer inputs in CPU memory and the MLP a tile
               of tokens at a time (longctx.py, which has the per-token memory arithmetic)
checkpoint_layers, recompute_elementwise, offload_kept_layers and micro_batch_size are chosen by an automatic
plan for LoRA on CUDA unless set (auto_plan.py): the fastest predicted plan whose predicted peak memory is no more
than plain transformers + PEFT's and the budget.
Padding-free packing is the collator's job (train.packing); the loss here handles packed rows unchanged."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from types import MethodType

from tunewise.config import FastConfig, TrainConfig
from tunewise.errors import ConfigError
from tunewise.models.estimate import GIB, ModelShape
from tunewise.train.distributed import world_size
from tunewise.train.fast.auto_plan import BUDGET_SHARE, Plan, plan_for, planned
from tunewise.train.fast.graphs import AUTO_MAX_TOKENS, MAX_GRAPHS, enable_graphs, family_off, graphable, stack_of
from tunewise.train.fast.layers import (
    LIGER_PATCH,
    apply_liger_kernels,
    compile_layers,
    decoder_layers,
    enable_checkpointing,
    family_limits,
    liger_available,
    prefer_sdpa_backend,
    use_torch_rms_norm,
)
from tunewise.train.fast.longctx import enable_long_context, host_spare
from tunewise.train.fast.lora import fuse_lora_layers, fused_4bit_layers
from tunewise.train.fast.lora_groups import group_lora_projections
from tunewise.train.fast.loss import causal_lm_loss
from tunewise.train.fast.offload import enable_offload, offloaded_indices
from tunewise.train.fast.recompute import enable_recompute
from tunewise.train.tokenize import bucket_lengths, padded_width

SUPPORTED = set(LIGER_PATCH)  # decoder families whose CausalLM forward is model → lm_head (→ soft-cap) → loss

__all__ = ["FastPath", "apply_fast_path", "causal_lm_loss", "decide", "graph_steps", "graphs_config_off",
           "graphs_max_tokens", "hf_model_of", "other_graph_widths"]


@dataclass
class FastPath:
    enabled: bool
    reason: str
    loss: str = "plain"  # plain | chunked | liger
    kernels: bool = False
    torch_norms: int = 0  # RMSNorms run by torch's fused kernel (train.fast.rms_norm torch, with kernels)
    fused_lora_layers: int = 0
    fused_4bit_layers: int = 0  # of those, over QLoRA's 4-bit base layers (quantized.py)
    lora_groups: int = 0  # q/k/v and gate/up groups run as one (lora_groups.py)
    checkpointed_layers: int | None = None  # None: the Trainer's own setting applies
    micro_batch_size: int | None = None  # None: the device batch is one micro-batch
    sdpa_backend: str = "default"
    causal_padding: bool = False  # right-padded batches go to attention without their padding mask (trainer.py)
    recompute_layers: int = 0  # layers keeping recipes for norm outputs / SwiGLU product (recompute.py)
    host_kept_layers: int = 0  # kept layers whose saved tensors wait in pinned host memory (offload.py)
    compiled_layers: int = 0
    freeze_gc: bool = False  # gc.freeze() while training (quiet_gc.py; tunewise.train.train applies it)
    bf16_frozen_head: bool = False  # QLoRA: embeddings / LM head kept in bf16 instead of PEFT's fp32 upcast
    family_off: dict[str, str] | None = None  # component asked for → why this model family keeps it off
    plan: dict | None = None  # the automatic plan (auto_plan.Plan.to_json() and its one-line "why")
    offload_layers: int = 0  # checkpointed layers whose input may go to CPU memory (longctx.py)
    tiled_mlps: int = 0  # MLPs that may run a tile of tokens at a time (longctx.py)
    long_context: str = "off"  # the offload / tile settings they follow
    graphed_layers: int = 0  # decoder layers replayed as one CUDA graph (graphs.py)
    graphs_off: str | None = None  # why cuda_graphs stays off (None: on, or not asked)
    graphs_max_tokens: int | None = None  # larger micro-steps run eagerly (cuda_graphs auto); None: any size
    graph_steps: dict | None = None  # after training: micro-steps replayed / eager, captures, drops (graphs.py)

    def describe(self) -> str:
        if not self.enabled:
            return f"plain path ({self.reason})"
        ckpt = "off" if self.checkpointed_layers is None else f"{self.checkpointed_layers} layers"
        four_bit = f" ({self.fused_4bit_layers} over 4-bit weights)" if self.fused_4bit_layers else ""
        extra = f", micro-batch {self.micro_batch_size}" if self.micro_batch_size else ""
        extra += f", SDPA {self.sdpa_backend} first" if self.sdpa_backend != "default" else ""
        extra += ", right padding without its mask (causal attention alone)" if self.causal_padding else ""
        extra += ", GC frozen in training" if self.freeze_gc else ""
        extra += f", LoRA groups {self.lora_groups}" if self.lora_groups else ""
        extra += f", torch RMSNorm in {self.torch_norms}" if self.torch_norms else ""
        extra += f", elementwise recompute in {self.recompute_layers} layers" if self.recompute_layers else ""
        extra += f", saved tensors of {self.host_kept_layers} layers in host memory" if self.host_kept_layers else ""
        extra += f", long context ({self.long_context})" if self.offload_layers or self.tiled_mlps else ""
        size = f" for micro-steps of up to {self.graphs_max_tokens} tokens" if self.graphs_max_tokens else ""
        extra += f", CUDA graphs over {self.graphed_layers} layers{size}" if self.graphed_layers else ""
        extra += f", no CUDA graphs ({self.graphs_off})" if self.graphs_off else ""
        if self.family_off:
            extra += "; off for this model: " + "; ".join(f"{k} ({v})" for k, v in self.family_off.items())
        line = (
            f"fast path ({self.reason}): loss {self.loss}, Liger kernels {'on' if self.kernels else 'off'}, "
            f"fused LoRA layers {self.fused_lora_layers}{four_bit}, checkpointing {ckpt}, "
            f"compiled layers {self.compiled_layers}{extra}"
        )
        return f"{line}\n  {self.plan['why']}" if self.plan else line

    def to_json(self) -> dict:
        return asdict(self)


def hf_model_of(model):
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def graph_steps(model) -> dict | None:
    """How the model's training micro-steps ran where its decoder stack may replay CUDA graphs, else None."""
    stack = stack_of(hf_model_of(model))
    return stack.counts() if stack is not None else None


def decide(fast: FastConfig, device: str, model_type: str) -> tuple[bool, str]:
    """Whether the fast path runs, and why (the reason goes into the log line and the train result)."""
    if fast.enabled is False:
        return False, "train.fast.enabled is false"
    if model_type not in SUPPORTED:
        return False, f"model type {model_type!r} has no fast path; it covers {', '.join(sorted(SUPPORTED))}"
    if fast.enabled == "auto" and device != "cuda":
        return False, f"auto and the device is {device}, not CUDA"
    return True, "on by train.fast.enabled" if fast.enabled is True else "auto: CUDA and a supported model"


def _fast_forward(
    self,
    input_ids=None,
    attention_mask=None,
    position_ids=None,
    past_key_values=None,
    inputs_embeds=None,
    labels=None,
    use_cache=None,
    logits_to_keep=0,
    **kwargs,
):
    """CausalLM forward for training: decoder → chunked loss, no logits. Evaluation and generation (no labels,
    or eval mode) take the model's own forward, since they need the logits."""
    decoder_inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache)
    if labels is None or not self.training:
        return type(self).forward(self, **decoder_inputs, labels=labels, logits_to_keep=logits_to_keep, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast  # heavy

    num_items = kwargs.pop("num_items_in_batch", None)
    shift_labels = kwargs.pop("shift_labels", None)
    out = self.model(**decoder_inputs, **kwargs)
    opts = self._tunewise_fast_loss
    loss = causal_lm_loss(
        out.last_hidden_state,
        self.lm_head.weight,
        labels,
        num_items,
        shift_labels,
        chunk_tokens=opts["chunk_tokens"],
        impl=opts["impl"],
        softcap=opts.get("softcap"),
    )
    return CausalLMOutputWithPast(
        loss=loss,
        logits=None,
        past_key_values=out.past_key_values,
        hidden_states=out.hidden_states,
        attentions=out.attentions,
    )


def _frozen_head_to_bf16(hf) -> bool:
    """PEFT's prepare_model_for_kbit_training upcasts every non-4-bit weight to fp32, the frozen embedding and
    LM head included: +2 GiB each for Llama-3-8B (vocab 128256 × 4096) and an fp32 LM-head product. Frozen,
    they gain nothing from fp32; the trainable adapters and the norms keep it."""
    import torch  # heavy

    changed = False
    for module in (hf.get_input_embeddings(), hf.get_output_embeddings()):
        if module is not None and module.weight.dtype == torch.float32 and not module.weight.requires_grad:
            module.to(torch.bfloat16)
            changed = True
    return changed


def _loss_impl(fast: FastConfig, device: str) -> str:
    if fast.loss == "auto":
        return "liger" if device == "cuda" and liger_available() else "chunked"
    if fast.loss == "liger" and not (device == "cuda" and liger_available()):
        return "chunked"  # Liger needs CUDA and the package; the pure-torch loss computes the same thing
    return fast.loss


def micro_batch(fast: FastConfig, batch_size: int) -> int | None:
    """train.fast.micro_batch_size when set and it splits the device batch (it must divide train.batch_size);
    None for no split or auto."""
    micro = fast.micro_batch_size
    if micro is None or micro == "auto" or micro >= batch_size:
        return None
    if batch_size % micro:
        raise ConfigError(f"config: train.fast.micro_batch_size={micro} does not divide train.batch_size="
                          f"{batch_size}")
    return micro


def memory_budget_gib(fast: FastConfig, device: str) -> float | None:
    """train.fast.memory_budget_gib, else on CUDA a share of what the GPU has free plus what this process holds
    (the model is loaded by now, and the plan's peak counts its weights)."""
    if fast.memory_budget_gib is not None or device != "cuda":
        return fast.memory_budget_gib
    import torch  # heavy

    free, _ = torch.cuda.mem_get_info()
    return BUDGET_SHARE * (free + torch.cuda.memory_reserved()) / GIB


def _device_name(device: str) -> str:
    import torch  # heavy

    return torch.cuda.get_device_name() if device == "cuda" and torch.cuda.is_available() else "H100"


def other_graph_widths(fast: FastConfig, lengths: list[int] | None, multiple: int = 1) -> tuple[int, ...]:
    """The batch widths below the longest that the training examples' lengths give (bucket padding's widths where
    it may be on, else lengths rounded up to `multiple`): each may get a graph of its own, MAX_GRAPHS in all. None
    or no lengths: one width (fixed-width batches)."""
    if not lengths:
        return ()
    longest = max(lengths)
    ladder = bucket_lengths(longest) if fast.bucket_padding is not False else ()
    widths = {padded_width(n, ladder, multiple, longest) for n in lengths}
    return tuple(sorted(widths - {longest})[-(MAX_GRAPHS - 1):])


def auto_plan(hf, train: TrainConfig, device: str, result: FastPath, seq_len: int | None,
              shards: int = 1, widths: tuple[int, ...] = ()) -> Plan | None:
    """The automatic plan, where one is made: LoRA on CUDA, adapters fused, the fast loss, a known sequence length
    and at least one of micro_batch_size, checkpoint_layers, recompute_elementwise on auto. widths: the other batch
    widths the data gives (other_graph_widths), whose graphs a replayed plan also keeps."""
    if device != "cuda" or not planned(train) or not result.fused_lora_layers or result.loss == "plain" \
            or not seq_len:
        return None
    shape = ModelShape.from_config(hf.config.to_dict())
    attention = getattr(hf.config, "_attn_implementation", None)
    if attention == "eager" and not shape.eager:
        # eager attention keeps seq² probabilities per layer, which the memory model counts for Gemma 2 only
        result.plan = {"why": "no automatic plan: eager attention's seq² probabilities are not in the memory "
                       f"model for {shape.model_type or 'this model'}; every layer checkpointed as configured"}
        return None
    spare = host_spare()
    # the stack's graphs count in plans that offload nothing (an offloaded layer keeps them off)
    graphs = graphs_off(train.fast, train, device, hf, result, (), shards) is None
    most = graphs_max_tokens(train.fast) if graphs else 0
    return plan_for(shape, train, seq_len, host_gib=None if spare is None else max(0, spare) / GIB,
                    graphs_max_tokens=most, graph_widths=widths if most else (),
                    budget_gib=memory_budget_gib(train.fast, device), device=_device_name(device),
                    kernels=result.kernels, shards=shards, attention=attention,
                    loss_chunk_tokens=train.fast.loss_chunk_tokens if result.loss == "chunked" else None)


def graphs_config_off(train: TrainConfig, device: str, processes: int, model_type: str) -> str | None:
    """Why the config keeps the decoder stack's CUDA graphs (graphs.py) off, or None: what is known before the
    model is loaded (`tunewise estimate` asks this; apply_fast_path asks graphs_off)."""
    fast = train.fast
    reasons = [
        (fast.cuda_graphs is False, "train.fast.cuda_graphs is false"),
        (device != "cuda", f"the device is {device}"),
        (train.method not in ("lora", "qlora"), f"method {train.method}: only LoRA and QLoRA adapters"),
        (not fast.fused_lora, "the LoRA layers are not fused"),
        (train.lora.dropout > 0, "LoRA dropout draws random numbers"),
        (fast.compile, "torch.compile runs the layers"),
        (processes > 1, "several processes"),
    ]
    return next((r for cond, r in reasons if cond), None) or family_off(model_type)


def graphs_max_tokens(fast: FastConfig) -> float:
    """The largest micro-step the stack replays where its graphs are on: AUTO_MAX_TOKENS under auto, any under true."""
    return AUTO_MAX_TOKENS if fast.cuda_graphs == "auto" else float("inf")


def graphs_off(fast: FastConfig, train: TrainConfig, device: str, hf, result: FastPath, offloaded,
               shards: int) -> str | None:
    """Why the decoder stack is not captured as CUDA graphs (graphs.py), or None when it is: the config
    (graphs_config_off), then this model and this plan."""
    config = graphs_config_off(train, device, max(shards, world_size()), hf.config.model_type)
    reasons = [(not result.fused_lora_layers, "the LoRA layers are not fused"),
               (bool(offloaded), "kept layers are offloaded to the host")]
    return config or next((r for cond, r in reasons if cond), None) or graphable(hf)


def apply_fast_path(model, train: TrainConfig, device: str, log: bool = True, seq_len: int | None = None,
                    shards: int = 1, widths: tuple[int, ...] = ()) -> FastPath:
    """Apply the enabled components to `model` (a transformers CausalLM, PEFT-wrapped or not) in place.
    Gradient checkpointing, when train.gradient_checkpointing is on, is enabled here (the Trainer's own
    switch must then stay off): the fast path decides which layers are checkpointed. seq_len: the longest
    training sequence, for the automatic plan (none is made without it); shards: devices FSDP splits the
    weights over; widths: the other batch widths the training data gives (other_graph_widths), for the plan."""
    fast = train.fast
    hf = hf_model_of(model)
    on, reason = decide(fast, device, getattr(hf.config, "model_type", "?"))
    result = FastPath(on, reason)
    if on:
        limits = family_limits(hf)
        impl = _loss_impl(fast, device)
        if impl != "off":
            hf._tunewise_fast_loss = {"impl": impl, "chunk_tokens": fast.loss_chunk_tokens,
                                      "softcap": getattr(hf.config, "final_logit_softcapping", None)}
            hf.forward = MethodType(_fast_forward, hf)
            result.loss = impl
        if fast.kernels is not False and device == "cuda" and liger_available():
            apply_liger_kernels(hf)
            # torch's over Liger's: a norm whose weight dtype differs from its input's (a k-bit model's fp32
            # norms) keeps Liger's, which casts as the model does without fp32 copies
            if fast.rms_norm == "torch" and "torch RMSNorm" not in limits:
                result.torch_norms = use_torch_rms_norm(hf)
            result.kernels = True
        if getattr(hf, "is_loaded_in_4bit", False):
            result.bf16_frozen_head = _frozen_head_to_bf16(hf)
        if fast.fused_lora:
            result.fused_lora_layers = fuse_lora_layers(model)
            result.fused_4bit_layers = fused_4bit_layers(model)
            if fast.grouped_lora:
                blocks = [b for layer in decoder_layers(hf) for b in (layer.self_attn, layer.mlp)]
                result.lora_groups = group_lora_projections(blocks)
        micro = micro_batch(fast, train.batch_size)  # an explicit value is checked whether planned or not
        plan = auto_plan(hf, train, device, result, seq_len, shards, widths)
        if plan is not None:
            result.plan = {**plan.to_json(), "why": plan.describe()}
            micro = plan.micro_batch_size if plan.micro_batch_size < train.batch_size else None
            share, recompute = plan.checkpoint_fraction, plan.recompute_elementwise
            offload = plan.offloaded_layers
        else:
            share = 1.0 if fast.checkpoint_layers == "auto" else fast.checkpoint_layers
            recompute = fast.recompute_elementwise is True
            offload = 0 if fast.offload_kept_layers == "auto" else fast.offload_kept_layers
        # never under fast.compile (dynamo does not trace saved-tensor hooks) nor FSDP (the unsharded weights a
        # layer saves are not the parameters offload.py knows)
        if fast.compile or shards > 1:
            offload = 0
        layers = decoder_layers(hf)
        if train.gradient_checkpointing:  # a checkpointed layer keeps only its input: nothing to offload
            offload = min(offload, len(layers) - round(share * len(layers)))
        offloaded = offloaded_indices(len(layers), offload)
        result.graphs_off = graphs_off(fast, train, device, hf, result, offloaded, shards)
        graphs = result.graphs_off is None
        if fast.cuda_graphs == "auto" and device != "cuda":
            result.graphs_off = None  # auto off the GPU: nothing to say
        if train.gradient_checkpointing:
            result.checkpointed_layers = enable_checkpointing(hf, share, avoid=offloaded, rng=not graphs)
        attention = getattr(hf.config, "_attn_implementation", None)
        result.causal_padding = fast.causal_padding is True or (
            fast.causal_padding == "auto" and device == "cuda" and attention == "sdpa")
        if fast.sdpa_backend != "default" and device == "cuda" and "SDPA backend" not in limits:
            prefer_sdpa_backend(hf, fast.sdpa_backend)
            result.sdpa_backend = fast.sdpa_backend
        if recompute and not fast.compile:  # dynamo does not trace saved-tensor hooks
            result.recompute_layers = enable_recompute(layers, result.kernels)
        if offloaded:
            result.host_kept_layers = enable_offload(hf, layers, offloaded)
        if fast.compile:
            result.compiled_layers = compile_layers(hf, fast.compile_mode)
        else:  # dynamo does not trace saved-tensor hooks
            longctx, result.offload_layers, result.tiled_mlps = enable_long_context(
                hf, layers, fast.offload_activations, fast.tile_mlp_tokens, result.kernels)
            result.long_context = (f"offload {fast.offload_activations} in {result.offload_layers} layers, "
                                   f"MLP tiles {fast.tile_mlp_tokens} in {result.tiled_mlps}")
            if graphs:  # a micro-step long enough for longctx's host copies or tiles runs eagerly
                most = graphs_max_tokens(fast)
                result.graphs_max_tokens = None if most == float("inf") else int(most)
                enable_graphs(hf, skip=lambda h: longctx.offloads(h) or longctx.tile_for(h, True) > 0,
                              max_tokens=result.graphs_max_tokens)
                result.graphed_layers = len(layers)
        asked = {"torch RMSNorm": result.kernels and fast.rms_norm == "torch",
                 "SDPA backend": fast.sdpa_backend != "default" and device == "cuda",
                 "elementwise recompute": recompute and not fast.compile}
        result.family_off = {k: v for k, v in limits.items() if asked.get(k)} or None
        result.micro_batch_size = micro
        result.freeze_gc = fast.freeze_gc
    if log:
        print(f"tunewise: {result.describe()}", file=sys.stderr, flush=True)
    return result
