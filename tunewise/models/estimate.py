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

from tunewise.models.prices import dollars

GIB = 1024**3

# Device table. peak_tflops: dense BF16 tensor-core TFLOP/s from the vendors' datasheets (H100 SXM5 989,
# A100 SXM 312, L4 121, RTX 4090 165 with FP32 accumulate, Ada whitepaper). mfu: the share of that peak a
# Trainer + peft step reaches; 0.35 is typical of published Llama fine-tuning MFU on one GPU and is what
# bench/estimate_accuracy.py checks. CPU: effective fp32 throughput derived from the demo (35.5k tokens of
# SmolLM2-135M LoRA in ~4 min on 2 cores = ~0.08 TFLOP/s), so mfu is 1; small shapes run far below it (the
# toy CPU bench is dominated by per-op overhead). memory_gib: what CUDA reports.
DEVICES: dict[str, dict] = {
    "H100": {"memory_gib": 79.6, "peak_tflops": 989.0, "mfu": 0.35},
    "A100": {"memory_gib": 79.2, "peak_tflops": 312.0, "mfu": 0.35},
    "L4": {"memory_gib": 22.0, "peak_tflops": 121.0, "mfu": 0.35},
    "RTX4090": {"memory_gib": 23.6, "peak_tflops": 165.0, "mfu": 0.35},
    "CPU": {"memory_gib": None, "peak_tflops": 0.1, "mfu": 1.0},
}
# bitsandbytes dequantises every 4-bit weight before each matmul; published QLoRA step times are ~1.3x LoRA.
QLORA_SLOWDOWN = 1.3
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
                   c["vocab_size"], bool(c.get("tie_word_embeddings", False)), not non_gated)

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
    activations_gib: float
    peak_memory_gib: float
    device_memory_gib: float | None
    tokens_per_epoch: int
    seconds_per_epoch: float
    epochs: float
    hours: float
    cost_usd: float
    tflops_assumed: float

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


def _memory(shape: ModelShape, method: str, trainable: int, bf16: bool) -> tuple[float, float, float]:
    """(weights, grads, optimizer) bytes. AdamW keeps two states per trainable parameter in its dtype."""
    wbytes = 2 if bf16 else 4
    if method == "full":
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
        factor += 1.0
    return fwd * factor * (QLORA_SLOWDOWN if method == "qlora" else 1.0)


def estimate(shape: ModelShape, method: str, *, batch_size: int, seq_len: int, tokens_per_epoch: int,
             epochs: float, device: str = "H100", gpus: int = 1, r: int = 16, target_modules="all-linear",
             dropout: float = 0.05, gradient_checkpointing: bool = False, mean_seq_len: int | None = None,
             prices: dict[str, float] | None = None, mfu: float | None = None,
             device_memory_gib: float | None = None) -> Estimate:
    """Peak memory per device for one micro-batch of `batch_size` x `seq_len`, and time for the whole run."""
    spec = _device(device)
    bf16 = device.upper() != "CPU"
    trainable = trainable_params(shape, method, r, target_modules)
    weights, grads, optim = _memory(shape, method, trainable, bf16)
    tokens = batch_size * seq_len
    acts = activation_bytes(shape, method, tokens, seq_len, bf16=bf16, dropout=dropout,
                            gradient_checkpointing=gradient_checkpointing, attention_scores=not bf16)
    acts += tokens * shape.vocab * LOSS_TRANSIENT_BYTES
    tflops = spec["peak_tflops"] * (mfu or spec["mfu"]) * gpus
    flops = train_flops_per_token(shape, method, mean_seq_len or seq_len, gradient_checkpointing)
    seconds = tokens_per_epoch * flops / (tflops * 1e12)
    hours = seconds * epochs / 3600
    return Estimate(device, method, shape.total_params, trainable, weights / GIB, grads / GIB, optim / GIB,
                    acts / GIB, (weights + grads + optim + acts) / GIB,
                    device_memory_gib if device_memory_gib is not None else spec["memory_gib"],
                    tokens_per_epoch, seconds, epochs, hours, dollars(hours * 3600 * gpus, device, prices), tflops)


def _device(name: str) -> dict:
    key = next((k for k in DEVICES if k.lower() == name.lower()), None)
    if key is None:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")
    return DEVICES[key]


def saved_activation_bytes(model, input_ids) -> int:
    """Measured activation memory: bytes of the distinct non-parameter tensors autograd saves for backward
    in one forward pass (run it inside any autocast context you want measured). The estimator's activation
    terms are checked against this, in tests and in bench/estimate_accuracy.py."""
    import torch

    params = {p.data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=input_ids, labels=input_ids)
    return sum(seen.values())
