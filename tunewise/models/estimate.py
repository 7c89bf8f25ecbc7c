"""Estimate a training run's parameters, peak memory, time and cost from the model's config.json alone.

No weights are read, so an 8B config is estimated instantly. The memory model counts, per token and layer,
the bytes autograd keeps for backward. Those coefficients were measured (not guessed) with
`torch.autograd.graph.saved_tensors_hooks` on Llama-shaped models through transformers 5 + peft 0.21 at several
hidden/intermediate/KV sizes and fitted linearly (see `measure_saved_bytes` below and tests/models/test_estimate.py,
which checks the fit on a shape it was not fitted on). bench/estimate_accuracy.py checks the whole estimate
against torch.cuda.max_memory_allocated and step time on a GPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tunewise.models.prices import device_key, dollars

GIB = 1024**3

# Device table. peak_tflops: dense BF16 tensor-core TFLOP/s from the vendors' datasheets (H100 SXM5 and
# H200 SXM 989, A100 SXM 312, L4 121, RTX 4090 165 with FP32 accumulate, Ada whitepaper). mfu: the share of
# that peak a compute-bound Trainer + peft step reaches: 0.29, measured on the H100 (Llama-3-8B LoRA, 1x4096,
# 464 ms a step in bench/results/estimate_accuracy.md); assumed the same on the other GPUs (not measured).
# CPU: effective fp32 throughput derived from the demo (35.5k tokens of SmolLM2-135M LoRA in ~4 min on 2 cores
# = ~0.08 TFLOP/s), so mfu is 1; small shapes run far below it (the toy CPU bench is dominated by per-op
# overhead). memory_gib: what CUDA reports (H200: nvidia-smi's 143771 MiB on the H200 machines this project is lent).
DEVICES: dict[str, dict] = {
    "H200": {"memory_gib": 140.4, "peak_tflops": 989.0, "mfu": 0.29, "host_link_gbs": 55.3},
    "H100": {"memory_gib": 79.6, "peak_tflops": 989.0, "mfu": 0.29},
    "A100": {"memory_gib": 79.2, "peak_tflops": 312.0, "mfu": 0.29},
    "L4": {"memory_gib": 22.0, "peak_tflops": 121.0, "mfu": 0.29},
    "RTX4090": {"memory_gib": 23.6, "peak_tflops": 165.0, "mfu": 0.29},
    "CPU": {"memory_gib": None, "peak_tflops": 0.1, "mfu": 1.0},
}
# host_link_gbs: GPU↔pinned-host copy rate one way, GB/s (10^9), where measured: the H200's 55.3 each way (101.5 both
# at once; bench/train_speed/host_link.py, 2026-11-29, nvidia-h200-x2). The automatic plan offloads kept
# activations only on devices with a measured rate (tunewise.train.fast.offload).
# bitsandbytes dequantises every 4-bit weight before each matmul: measured 576 vs 464 ms a step for 8B at
# 1x4096 on the H100 (bench/results/estimate_accuracy.md).
QLORA_SLOWDOWN = 1.24
# A step has a floor the GPU cannot beat: the host's time to launch its kernels (autograd, autocast and peft's
# per-module Python), which overlaps a long step's GPU work and is the whole of a short one. Measured on the H100:
# LoRA steps of SmolLM2-135M take 214-245 ms at any size from 8x256 to 4x4096 tokens (210 adapted modules), 8B
# LoRA 236-262 ms up to 1x2048 (224 modules); QLoRA 298-311 ms; full fine-tuning 113-120 ms for 30 layers.
# So: seconds per micro-batch = max(this floor, FLOPs / (peak x mfu)). Per adapted module (adapters) or per
# layer (full fine-tuning), so the floor scales with the model.
LAUNCH_FLOOR_S = {"lora": 1.05e-3, "dora": 1.05e-3, "qlora": 1.36e-3, "full": 3.8e-3}  # dora: not measured
# What the CUDA caching allocator's peak shows against the saved-for-backward bytes the coefficients above
# count (those were measured on CPU): LoRA 0.69 (8B) to 0.79 (135M) of them, full fine-tuning 1.00; QLoRA
# 0.86 of them plus 1.1 GiB (prepare_model_for_kbit_training's fp32 upcasts, dequantisation buffers).
# Fitted on the rows of bench/results/estimate_accuracy.md; applied on GPUs only, to LoRA only where the model
# has no gated MLP (a gated one is counted tensor by tensor: lora_activation_bytes).
GPU_ACTIVATION_SCALE = {"lora": 0.72, "dora": 0.72, "qlora": 0.86, "full": 1.0}
QLORA_EXTRA_GIB = 1.1
# Evaluation during training computes the loss over the whole eval batch: bf16 logits, their fp32 upcast and
# the fp32 log-softmax, 10 B per vocabulary entry per token, on top of the resident weights and optimizer state.
# With eval_batch_size 128 on Banking77 that is the run's peak: 9.0 GiB estimated, 8.43 GiB measured.
EVAL_LOGIT_BYTES = 10
# NF4 with double quantisation: 4 bits + an 8-bit absmax per 64 weights + an fp32 per 256 absmax blocks.
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)

# Saved-for-backward bytes per token: per layer a*hidden + b*intermediate + c*kv_dim, plus a non-layer term
# d*hidden + 4*vocab (the fp32 log-softmax of the loss). Keys: (adapter?, bf16 autocast?). Fit residuals < 1 %.
ACT_COEF = {
    (True, True): (26.6, 8.9, 4.5, 0.0),  # LoRA/DoRA/QLoRA, bf16 weights + autocast (GPU)
    (False, True): (20.1, 8.0, 4.0, 8.5),  # full fine-tuning, bf16
    (True, False): (24.6, 16.2, 8.0, 1.0),  # LoRA, fp32 (CPU)
    (False, False): (32.1, 16.0, 8.0, 13.0),  # full fine-tuning, fp32
}
# LoRA dropout > 0: peft makes a dropped-out copy of the input (and a mask) in every adapted module:
# (per hidden per layer, per intermediate per layer, per hidden once), keyed by bf16.
DROPOUT_COEF = {True: (24.0, 4.0, -12.2), False: (40.0, 4.0, -12.0)}
# At the peak (start of backward) the loss also holds the logits' gradient in fp32 and bf16: 8 B per vocab entry.
LOSS_TRANSIENT_BYTES = 8

# LoRA on CUDA (bf16 weights under bf16 autocast, SDPA's flash / cuDNN / memory-efficient kernels), counted
# tensor by tensor rather than fitted: plain_lora_layer_bytes and fast_lora_layer_bytes say what each layer keeps.
# Against the allocator's peak of every LoRA row of bench/results/train_speed.md and estimate_accuracy.md they
# are within 3 % (tests/models/test_estimate.py). Beyond the layers, per token:
# plain: the loss's backward holds the fp32 log-softmax, its gradient and the gradient it returns (12 B per
# vocabulary entry); it is the peak unless a recomputed layer is larger.
PLAIN_LOSS_BYTES = 12
# Soft-capped final logits (Gemma 2: logits / cap, tanh, x cap before the loss) hold 2 B more per vocabulary entry
# at plain's peak: fitted on the one measured row (Gemma-2-9B 2048×4, 47.7 GiB against 43.8 predicted without it).
SOFTCAP_LOSS_BYTES = 2
# fast path: the labelled hidden states the loss gathers, their gradient (computed in its forward), the final
# norm's input: 6 B per hidden unit, the one fitted constant (Llama-3-8B rows; 5.9–6.4 from each row alone).
FAST_OTHER_BYTES = 6
# fast path's pure-torch chunked loss (no Liger): a [chunk, vocab] block of bf16 logits, their fp32 softmax and
# its bf16 gradient live at once.
CHUNK_LOSS_BYTES = 8
# Training a checkpointed layer keeps its bf16 input only; in backward it is run again, one layer at a time.
CHECKPOINT_BYTES = 2
# Eager attention (Gemma 2: SDPA cannot soft-cap the logits; transformers' eager_attention_forward) keeps, per
# layer and (batch x head x query x key) element: tanh's bf16 output (the soft-cap), the fp32 softmax and its
# bf16 cast (probabilities · v's input). The scaling, /cap, x cap, + mask and dropout (p 0: returns its input)
# keep nothing. fp32 (CPU): tanh's and softmax's 4 B each, the cast a no-op: 8 B as well.
EAGER_SCORE_BYTES = 8
# The layer being backpropagated holds more during its softmax's backward: the probabilities' fp32 gradient
# and the fp32 gradient it returns, while the bf16 probabilities are freed: 2 + 4 + 4 + 4 = 14 B at once.
EAGER_BACKWARD_BYTES = 6
# transformers 5.17's FlexAttention path keeps key and value repeated to every query head (repeat_kv): 2 B each per
# query unit and token in a layer that is not checkpointed. Matches the measured Gemma-2-9B rows (47.0-47.3 GiB,
# 43.3 predicted without it); later releases skip the copy for power-of-two head counts, which this over-counts.
FLEX_KV_BYTES = 4
# Model types transformers runs eager by default (no SDPA) and whose eager scores are counted here; tunewise's
# own runs of Gemma 2 take FlexAttention on CUDA (tunewise.train.runtime), which keeps no seq² tensors.
EAGER_ATTENTION = {"gemma2"}

# Fast-path step time: per decoder layer and micro-step the forward and the backward each take the longer of
# the host's time to launch them and the GPU's arithmetic; a checkpointed layer runs its forward again. Fitted
# on the seven fast-path rows of bench/results/train_speed.md (H100; within 1 %): host time per layer with all
# seven projections adapted (bench/train_speed/host_overhead.py measured 2.7-3.3 ms and 4.4-5.5 ms; the forward
# is GPU-bound at 4,096 tokens), the share of peak_tflops the layer's GEMMs and attention reach forward and
# backward (H100: 600 and 560 TFLOP/s, host_overhead's 3.1 / 3.8 ms per layer), a checkpointed layer's cost
# beyond its forward (per token), and the recipes' recompute per layer and micro-step.
FAST_HOST_S = (2.2e-3, 4.9e-3)
FAST_RATE = (0.607, 0.566)
FAST_RERUN_S_PER_TOKEN = 0.3e-6
FAST_RECIPE_S = 0.1e-3
# An offloaded layer's backward waits for its saved bytes to come back over the host link when that takes longer
# than the backward of one layer: this share of the difference, per offloaded layer and micro-step. Fitted on the
# first offload rows (H200, 8,192-token micro-steps, 9-11 offloaded layers: Llama-3-8B 0.65, Qwen2.5-7B 0.47,
# Mistral-7B 0.36 of the difference, against each model's own prediction without offload; the worst taken).
OFFLOAD_STALL_SHARE = 0.65
# Offloaded layers' saved bytes that may still be on the GPU at the peak: the copies in flight as the host sees
# them (offload.MAX_INFLIGHT + 1), or in the backward the layer fetched back beside the one in use.
OFFLOAD_INFLIGHT_LAYERS = 2
# The host link assumed where it is not measured (DEVICES' host_link_gbs), for a count of offloaded layers the
# user sets: PCIe 4.0 x16's 32 GB/s less its protocol overhead, the slowest link of the GPUs in DEVICES.
UNMEASURED_HOST_LINK_GBS = 25.0
# A decoder stack replayed from CUDA graphs (tunewise.train.fast.graphs) keeps its own fp32 copy of every adapter
# gradient beside .grad: QLoRA Llama-3-8B 2048×1 peaked at 6.96 GiB with graphs against 6.85 without (H200, 2026-11-30;
# its 42 M adapter parameters × 4 B = 0.16 GiB, so the count is on the safe side).
GRAPH_GRAD_BYTES = 4
# Every further batch shape the stack keeps a graph for holds its static input, its output and its input's gradient
# in the compute dtype: 3 × 2 B per token and hidden unit (graphs.py's buffers; not measured on its own).
GRAPH_SHAPE_BYTES = 6
# A micro-step replayed from graphs takes this many times its GPU arithmetic at FAST_RATE (fitted on 4,096-8,192-token
# micro-steps): smaller GEMMs, and the embedding, loss and gradient sums still launched by the host. Between the two
# measured choices (H200, 2026-11-30, 2048×4, one example per micro-step replayed): Mistral-7B with 10 of 32 layers
# checkpointed ran 1.01-1.04x its offloading plan (above 1.29 the model would not take it) and Llama-3-8B with none
# 0.90x its two-example plan without graphs (under 1.21 the model would take it instead).
GRAPH_GPU_FACTOR = 1.25
# LoRA dropout > 0 costs the plain path 7-8 % of its tokens/s (H100, 2048×4 and 2048×2: 6,554 against 7,054-7,166
# and 8,969 against 9,635-9,783); DEVICES' mfu was fitted with dropout 0.05. Assumed the same on the fast path.
DROPOUT_SLOWDOWN = 1.08
# Activation checkpointing's rerun of the forward, in forward-times: 1 for full fine-tuning (not measured); 0.73
# for adapters, measured on the plain path, whose forward is partly host-bound (9,635-9,783 tok/s at 2048×2
# without, 7,054-7,166 at 2048×4 with checkpointing).
RERUN_SHARE = {"lora": 0.73, "dora": 0.73, "qlora": 0.73, "full": 1.0}


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated: bool
    model_type: str = ""
    softcap_logits: bool = False  # final logits soft-capped (Gemma 2): plain's loss holds more (SOFTCAP_LOSS_BYTES)

    @classmethod
    def from_config(cls, c: dict) -> ModelShape:
        def get(*keys, default=None):
            return next((c[k] for k in keys if c.get(k) is not None), default)

        hidden = get("hidden_size", "n_embd", "d_model")
        layers = get("num_hidden_layers", "n_layer", "num_layers")
        heads = get("num_attention_heads", "n_head")
        if not (hidden and layers and heads and c.get("vocab_size")):
            raise ValueError("config.json lacks hidden_size/num_hidden_layers/num_attention_heads/vocab_size")
        non_gated = c.get("model_type") in {"gpt2", "gpt_neox", "gptj", "opt", "phi", "falcon", "bloom"}
        return cls(hidden, get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden), layers, heads,
                   get("num_key_value_heads", default=heads), get("head_dim", default=hidden // heads),
                   c["vocab_size"], bool(c.get("tie_word_embeddings", False)), not non_gated,
                   c.get("model_type") or "", c.get("final_logit_softcapping") is not None)

    def linears(self) -> dict[str, tuple[int, int]]:
        """The linear layers of one decoder layer: name → (in, out)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        out = {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
               "o_proj": (q, self.hidden)}
        if self.gated:
            out |= {"gate_proj": (self.hidden, self.intermediate), "up_proj": (self.hidden, self.intermediate),
                    "down_proj": (self.intermediate, self.hidden)}
        else:
            out |= {"fc1": (self.hidden, self.intermediate), "fc2": (self.intermediate, self.hidden)}
        return out

    @property
    def eager(self) -> bool:
        """Eager attention (seq² scores per layer) is transformers' default for it: Gemma 2, whose logits SDPA
        cannot soft-cap. What plain transformers + PEFT runs; the fast path may run another (lora_activation_bytes'
        eager)."""
        return self.model_type in EAGER_ATTENTION

    def eager_layer_bytes(self, seq_len: int, *, fast: bool) -> int:
        """Bytes per token one layer's eager attention keeps beyond SDPA's q, k, v and output (4q + 4kv): the
        scores (EAGER_SCORE_BYTES per key per head), q and the k and v repeat_kv copies to every query head
        (2 B each per q unit) and, on the fast path, the o projection's input (a copy: 2q); plain PEFT keeps
        its own copy of that already (plain_lora_layer_bytes)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return EAGER_SCORE_BYTES * self.heads * seq_len + (8 if fast else 6) * q - 4 * q - 4 * kv

    @property
    def linear_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.linears().values())

    @property
    def other_params(self) -> int:
        """Embeddings, (untied) output head and norms: never quantised."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden

    @property
    def total_params(self) -> int:
        return self.linear_params + self.other_params


def read_shape(model_dir: Path) -> ModelShape:
    path = Path(model_dir) / "config.json"
    return ModelShape.from_config(json.loads(path.read_text(encoding="utf-8")))


def _targets(shape: ModelShape, target_modules) -> dict[str, tuple[int, int]]:
    lin = shape.linears()
    if target_modules == "all-linear":
        return lin
    return {k: v for k, v in lin.items() if k in set(target_modules)}


def _adapted_inputs(shape: ModelShape, target_modules) -> dict[str, int]:
    """Adapted projection → its input width."""
    return {name: size_in for name, (size_in, _) in _targets(shape, target_modules).items()}


def plain_lora_layer_bytes(shape: ModelShape, target_modules="all-linear", dropout: float = 0.0) -> int:
    """Bytes per token one decoder layer of transformers + PEFT keeps for backward on CUDA (gated MLP): each
    RMSNorm's fp32 copy of its input (4 B per hidden unit, two norms); SDPA's q, k, v and output; the MLP's
    gate, SiLU output and up (6 B per intermediate unit); per adapted projection the bf16 copy autocast makes
    of PEFT's fp32 adapter input (2 B per input element) and, with dropout, its bool mask (1 B). Frozen base
    weights keep nothing. Llama-3-8B, all linear: 212 KiB, +38 KiB with dropout."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    inputs = sum(_adapted_inputs(shape, target_modules).values())
    return 8 * shape.hidden + 4 * q + 4 * kv + 6 * shape.intermediate + (3 if dropout > 0 else 2) * inputs


def fast_lora_layer_bytes(shape: ModelShape, target_modules="all-linear", *, recipes: bool = False,
                          kernels: bool = True) -> int:
    """Bytes per token one decoder layer keeps for backward on tunewise's fast path (tunewise.train.fast, fused
    LoRA): each norm's input (bf16 with torch's fused kernel, transformers' fp32 copy without kernels); SDPA's q,
    k, v and output (which the o projection's adapter keeps as its input: the same storage); the SwiGLU's gate
    and up (Liger's kernel; torch's also keeps the SiLU output); the inputs the adapters keep, each once per
    block: the two norm outputs and the SwiGLU product, none of them with recipes (recompute.py). LoRA dropout
    adds nothing: backward draws the masks again (lora.py). Llama-3-8B, all linear: 136 KiB, 92 KiB with
    recipes."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    adapted = _adapted_inputs(shape, target_modules)
    kept = 2 * (2 if kernels else 4) * shape.hidden + 4 * q + 4 * kv + (4 if kernels else 6) * shape.intermediate
    if not recipes:
        kept += 2 * shape.hidden * (any(n in adapted for n in ("q_proj", "k_proj", "v_proj")) +
                                    any(n in adapted for n in ("gate_proj", "up_proj")))
        kept += 2 * shape.intermediate * ("down_proj" in adapted)
    return kept


def lora_activation_bytes(shape: ModelShape, tokens: int, *, fast: bool, checkpointed: int = 0,
                          recipes: bool = False, dropout: float = 0.0, target_modules="all-linear",
                          kernels: bool = True, loss_chunk_tokens: int | None = None,
                          seq_len: int | None = None, eager: bool | None = None, flex: bool = False,
                          offloaded: int = 0) -> float:
    """Peak bytes above weights, gradients and optimizer state of one LoRA micro-step of `tokens` tokens on CUDA,
    plain (transformers + PEFT) or on the fast path. `checkpointed` layers keep their input only and one at a
    time is recomputed whole in backward (checkpointed layers keep no recipes). loss_chunk_tokens: the fast
    path's pure-torch loss (None: Liger's, whose chunks scale with the tokens and are in FAST_OTHER_BYTES).
    seq_len: the sequences' length, needed where the model runs eager attention, whose seq² scores every layer
    keeps and whose backward holds more in the layer it is in (EAGER_BACKWARD_BYTES). eager: whether it does
    (None: transformers' default for the model, shape.eager; SDPA, FlexAttention and FlashAttention keep no seq²
    tensors). flex: the fast path runs FlexAttention (FLEX_KV_BYTES). dropout: LoRA dropout, which costs memory on
    the plain path only (PEFT keeps its masks). offloaded: fast-path layers that are not checkpointed and keep
    their saved tensors in host memory (tunewise.train.fast.offload): none of them on the GPU at the peak but
    OFFLOAD_INFLIGHT_LAYERS."""
    keep = shape.layers - checkpointed - offloaded
    ckpt = checkpointed * CHECKPOINT_BYTES * shape.hidden
    scores = backward = 0
    if shape.eager if eager is None else eager:
        if not seq_len:
            raise ValueError(f"{shape.model_type} runs eager attention: its activations need seq_len")
        scores = shape.eager_layer_bytes(seq_len, fast=fast)
        backward = EAGER_BACKWARD_BYTES * shape.heads * seq_len
    if not fast:
        layer = plain_lora_layer_bytes(shape, target_modules, dropout) + scores
        loss = (PLAIN_LOSS_BYTES + SOFTCAP_LOSS_BYTES * shape.softcap_logits) * shape.vocab
        return tokens * (ckpt + keep * layer + max(loss, (layer if checkpointed else 0) + backward))
    if flex and shape.kv_heads < shape.heads:
        scores += FLEX_KV_BYTES * shape.heads * shape.head_dim
    layer = fast_lora_layer_bytes(shape, target_modules, recipes=recipes, kernels=kernels) + scores
    rerun = fast_lora_layer_bytes(shape, target_modules, kernels=kernels) + scores if checkpointed else 0
    chunk = CHUNK_LOSS_BYTES * shape.vocab * min(loss_chunk_tokens, tokens) if loss_chunk_tokens else 0
    fetched = OFFLOAD_INFLIGHT_LAYERS * layer if offloaded else 0
    return tokens * (ckpt + keep * layer + fetched + rerun + backward + FAST_OTHER_BYTES * shape.hidden) + chunk


def fixed_bytes(shape: ModelShape, method: str, r: int, target_modules="all-linear", *, bf16: bool = True,
                shards: int = 1) -> float:
    """Weights, gradients and optimizer state (AdamW), per device when FSDP splits them over `shards`."""
    return sum(_memory(shape, method, trainable_params(shape, method, r, target_modules), bf16)) / shards


def _host_layer_seconds(shape: ModelShape, target_modules) -> tuple[float, float]:
    """The host's time to launch one fast-path decoder layer's forward and backward (it grows with the adapters)."""
    adapted = len(_targets(shape, target_modules))
    return FAST_HOST_S[0] * (1 + adapted) / 8, FAST_HOST_S[1] * (1 + adapted) / 8


def fast_lora_layer_seconds(shape: ModelShape, *, seq_len: int, micro_tokens: int, r: int = 16,
                            target_modules="all-linear", peak_tflops: float = 989.0,
                            graphs: bool = False) -> tuple[float, float]:
    """One decoder layer's forward and backward seconds in one micro-step on the fast path (the constants above).
    graphs: the stack replays from CUDA graphs, so the host launches nothing per layer."""
    adapted = _targets(shape, target_modules)
    host_f, host_b = _host_layer_seconds(shape, target_modules)
    lora = r * sum(i + o for i, o in adapted.values())
    dense = sum(i * o for i, o in shape.linears().values())
    attention = seq_len * shape.heads * shape.head_dim  # causal: half of the 4·seq·q of full attention
    gpu_f = micro_tokens * (2 * dense + 2 * attention + 2 * lora) / (FAST_RATE[0] * peak_tflops * 1e12)
    gpu_b = micro_tokens * (2 * dense + 5 * attention + 4 * lora) / (FAST_RATE[1] * peak_tflops * 1e12)
    if graphs:
        return gpu_f * GRAPH_GPU_FACTOR, gpu_b * GRAPH_GPU_FACTOR
    return max(host_f, gpu_f), max(host_b, gpu_b)


def fast_lora_step_seconds(shape: ModelShape, *, seq_len: int, micro_tokens: int, micro_steps: int,
                           checkpointed: int, recipes: bool, dropout: float = 0.0, r: int = 16,
                           target_modules="all-linear", peak_tflops: float = 989.0, graphs: bool = False) -> float:
    """One optimizer step's seconds on the fast path: `micro_steps` micro-steps of `micro_tokens` tokens in
    sequences of `seq_len` (the constants above); graphs: the decoder stack replays from CUDA graphs."""
    forward, backward = fast_lora_layer_seconds(shape, seq_len=seq_len, micro_tokens=micro_tokens, r=r,
                                                target_modules=target_modules, peak_tflops=peak_tflops,
                                                graphs=graphs)
    layer = forward + backward
    rerun = forward + FAST_RERUN_S_PER_TOKEN * micro_tokens * 989.0 / peak_tflops
    loss = micro_tokens * 4 * shape.vocab * shape.hidden / (FAST_RATE[0] * peak_tflops * 1e12)
    loss *= GRAPH_GPU_FACTOR if graphs else 1.0
    keep = shape.layers - checkpointed
    micro = shape.layers * layer + checkpointed * rerun + keep * FAST_RECIPE_S * recipes + loss
    if graphs:  # the eager rest of a replayed micro-step (embedding, loss, gradient sums): about one layer's launches
        micro = max(micro, sum(_host_layer_seconds(shape, target_modules)))
    return micro_steps * micro * (DROPOUT_SLOWDOWN if dropout > 0 else 1.0)


def trainable_params(shape: ModelShape, method: str, r: int, target_modules="all-linear") -> int:
    if method == "full":
        return shape.total_params
    targets = _targets(shape, target_modules).values()
    lora = sum(r * (i + o) for i, o in targets)
    magnitude = sum(o for _, o in targets) if method == "dora" else 0
    return shape.layers * (lora + magnitude)


@dataclass
class Estimate:
    device: str
    method: str
    total_params: int
    trainable_params: int
    weights_gib: float
    grads_gib: float
    optimizer_gib: float
    activations_gib: float  # or, when larger, the evaluation batch's logits
    peak_memory_gib: float
    device_memory_gib: float | None
    tokens_per_epoch: int
    seconds_per_epoch: float
    epochs: float
    hours: float
    cost_usd: float
    tflops_assumed: float
    fast_plan: dict | None = None  # the fast path's automatic plan for this run (tunewise.train.fast.auto_plan)

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def short_json(self) -> dict:
        return {"peak_memory_gib": round(self.peak_memory_gib, 3), "hours": round(self.hours, 4),
                "cost_usd": round(self.cost_usd, 2), "trainable_params": self.trainable_params}

    @property
    def fits(self) -> bool:
        return self.device_memory_gib is None or self.peak_memory_gib <= self.device_memory_gib


def activation_bytes(shape: ModelShape, method: str, tokens: int, seq_len: int, *, bf16: bool,
                     dropout: float, gradient_checkpointing: bool, attention_scores: bool) -> float:
    """Bytes autograd saves for backward for `tokens` tokens in sequences of `seq_len` (targets all-linear)."""
    adapter = method != "full"
    a, b, c, d = ACT_COEF[(adapter, bf16)]
    kv = shape.kv_heads * shape.head_dim
    per_layer = a * shape.hidden + b * shape.intermediate + c * kv
    other = d * shape.hidden + 4 * shape.vocab
    if adapter and dropout > 0:
        dh, di, do = DROPOUT_COEF[bf16]
        per_layer += dh * shape.hidden + di * shape.intermediate
        other += do * shape.hidden
    if method == "dora":  # DoRA keeps the base and the LoRA output of every adapted module for its rescaling
        per_layer += 2 * (2 if bf16 else 4) * sum(o for _, o in shape.linears().values())
    if attention_scores:  # eager / math attention (CPU with a padding mask) keeps the softmax matrix
        per_layer += 2 * shape.heads * seq_len * (2 if bf16 else 4)
    if gradient_checkpointing:  # only each layer's input survives; one layer is recomputed at a time
        return tokens * (shape.layers * shape.hidden * (2 if bf16 else 4) + per_layer + other)
    return tokens * (shape.layers * per_layer + other)


def _memory(shape: ModelShape, method: str, trainable: int, bf16: bool,
            fp32_master: bool = True) -> tuple[float, float, float]:
    """(weights, grads, optimizer) bytes. AdamW keeps two states per trainable parameter in its dtype.
    Full fine-tuning keeps fp32 master weights unless `fp32_master` is off (tunewise/train always keeps them)."""
    wbytes = 2 if bf16 else 4
    if method == "full":
        wbytes = 4 if fp32_master else wbytes
        return shape.total_params * wbytes, trainable * wbytes, trainable * 2 * wbytes
    if method == "qlora":  # prepare_model_for_kbit_training upcasts every non-4-bit weight to fp32
        weights = shape.linear_params * NF4_BYTES_PER_PARAM + shape.other_params * 4
    else:
        weights = shape.total_params * wbytes
    return weights + trainable * 4, trainable * 4, trainable * 8  # peft keeps adapter weights in fp32


def train_flops_per_token(shape: ModelShape, method: str, seq_len: int, gradient_checkpointing: bool) -> float:
    """Forward 2N + causal attention; backward 2x forward for full training, ~1x when weights are frozen."""
    head = shape.vocab * shape.hidden
    fwd = 2 * (shape.linear_params + head) + 2 * shape.layers * seq_len * shape.heads * shape.head_dim
    factor = 3.0 if method == "full" else 2.0
    if gradient_checkpointing:
        factor += RERUN_SHARE[method]
    return fwd * factor * (QLORA_SLOWDOWN if method == "qlora" else 1.0)


def train_seconds(shape: ModelShape, method: str, tokens: int, micro_batch_tokens: int, seq_len: int,
                  gradient_checkpointing: bool, tflops_per_device: float, gpus: int = 1,
                  target_modules="all-linear", launch_floor: bool = True, dropout: float | None = None) -> float:
    """Seconds to train on `tokens`: micro-batches of `micro_batch_tokens`, shared by `gpus` devices, each the
    longer of its arithmetic time and the host's kernel-launch floor (LAUNCH_FLOOR_S). dropout: the adapters'
    (None: as the device's mfu was fitted, 0.05)."""
    compute = micro_batch_tokens * train_flops_per_token(shape, method, seq_len, gradient_checkpointing) \
        / (tflops_per_device * 1e12)
    if method != "full" and dropout == 0:
        compute /= DROPOUT_SLOWDOWN
    units = shape.layers if method == "full" else shape.layers * len(_targets(shape, target_modules))
    floor = LAUNCH_FLOOR_S[method] * units if launch_floor else 0.0
    return tokens / micro_batch_tokens * max(compute, floor) / gpus


def estimate(shape: ModelShape, method: str, *, batch_size: int, seq_len: int, tokens_per_epoch: int,
             epochs: float, device: str = "H100", gpus: int = 1, r: int = 16, target_modules="all-linear",
             dropout: float = 0.05, gradient_checkpointing: bool = False, mean_seq_len: int | None = None,
             prices: dict[str, float] | None = None, mfu: float | None = None,
             device_memory_gib: float | None = None, eval_batch_size: int | None = None,
             shards: int = 1, fp32_master: bool = True) -> Estimate:
    """Peak memory per device for one micro-batch of `batch_size` x `seq_len` per device (or for an evaluation
    batch of `eval_batch_size` x `seq_len`, when that is larger), and time for the whole run on `gpus` devices.
    `shards`: devices FSDP splits weights, gradients and optimizer state over (1 for DDP or one device; the
    one layer FSDP gathers at a time is left out as small)."""
    spec = _device(device)
    bf16 = device.upper() != "CPU"
    trainable = trainable_params(shape, method, r, target_modules)
    weights, grads, optim = (b / shards for b in _memory(shape, method, trainable, bf16, fp32_master))
    tokens = batch_size * seq_len
    if bf16 and method == "lora" and shape.gated:
        acts = lora_activation_bytes(shape, tokens, fast=False, dropout=dropout, target_modules=target_modules,
                                     checkpointed=shape.layers if gradient_checkpointing else 0, seq_len=seq_len)
    else:
        acts = activation_bytes(shape, method, tokens, seq_len, bf16=bf16, dropout=dropout,
                                gradient_checkpointing=gradient_checkpointing, attention_scores=not bf16)
        acts += tokens * shape.vocab * LOSS_TRANSIENT_BYTES
    if bf16 and not (method == "lora" and shape.gated):
        acts = acts * GPU_ACTIVATION_SCALE[method] + (QLORA_EXTRA_GIB * GIB if method == "qlora" else 0)
        if method == "full" and fp32_master:  # autocast's bf16 copies of the fp32 weights, kept for backward
            acts += shape.total_params * 2
    tflops_per_device = spec["peak_tflops"] * (mfu or spec["mfu"])
    tflops = tflops_per_device * gpus
    mean_len = mean_seq_len or seq_len
    seconds = train_seconds(shape, method, tokens_per_epoch, batch_size * mean_len, mean_len,
                            gradient_checkpointing, tflops_per_device, gpus, target_modules, launch_floor=bf16,
                            dropout=dropout)
    hours = seconds * epochs / 3600
    if eval_batch_size:  # gradients are freed (set to None) before evaluation: the eval peak does not hold them
        acts = max(acts, eval_batch_size * seq_len * shape.vocab * EVAL_LOGIT_BYTES - grads)
    return Estimate(device, method, shape.total_params, trainable, weights / GIB, grads / GIB, optim / GIB,
                    acts / GIB, (weights + grads + optim + acts) / GIB,
                    device_memory_gib if device_memory_gib is not None else spec["memory_gib"],
                    tokens_per_epoch, seconds, epochs, hours, dollars(hours * 3600 * gpus, device, prices), tflops)


def _device(name: str) -> dict:
    key = device_key(name, DEVICES)
    if key is None:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")
    return DEVICES[key]


def saved_activation_bytes(model, input_ids=None, batch: dict | None = None) -> int:
    """Measured activation memory: bytes of the distinct non-parameter tensors autograd saves for backward
    in one forward pass (run it inside any autocast context you want measured). The estimator's activation
    terms are checked against this, in tests and in bench/estimate_accuracy.py."""
    import torch  # heavy

    params = {p.data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**(batch if batch is not None else {"input_ids": input_ids, "labels": input_ids}))
    return sum(seen.values())
