"""What `python -m bench.train_speed` can run: the model shapes (config fields as the models' config.json
files give them, built with random weights), the rows (configurations) and the tunewise variants ("sides"),
each side a set of `train.fast` overrides."""

from __future__ import annotations

from dataclasses import dataclass

LLAMA3_8B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
QWEN25_7B = dict(  # Qwen/Qwen2.5-7B: q/k/v with biases, 4 key/value heads
    model_type="qwen2",
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    rope_theta=1000000.0,
    max_position_embeddings=131072,
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    tie_word_embeddings=False,
)
MISTRAL_7B = dict(  # mistralai/Mistral-7B-v0.3
    model_type="mistral",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=32768,
    rope_theta=1000000.0,
    max_position_embeddings=32768,
    rms_norm_eps=1e-5,
    sliding_window=None,
    tie_word_embeddings=False,
)
GEMMA2_9B = dict(  # google/gemma-2-9b: head_dim 256 (16 × 256 ≠ hidden), soft-capping, GeGLU, tied head
    model_type="gemma2",
    hidden_size=3584,
    intermediate_size=14336,
    num_hidden_layers=42,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=256,
    vocab_size=256000,
    rope_theta=10000.0,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    hidden_activation="gelu_pytorch_tanh",
    query_pre_attn_scalar=256,
    sliding_window=4096,
    final_logit_softcapping=30.0,
    attn_logit_softcapping=50.0,
    tie_word_embeddings=True,
)
MODELS = {"llama3-8b": LLAMA3_8B, "qwen25-7b": QWEN25_7B, "mistral-7b": MISTRAL_7B, "gemma2-9b": GEMMA2_9B}
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TINY_SCALE = 32  # --tiny divides sequence lengths by this
TINY_FAMILY = {"gemma2": dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=16)}  # --tiny, per family


@dataclass(frozen=True)
class Row:
    label: str
    kind: str  # lora | qlora | maxctx | qlora-maxctx | banking77
    seq: int = 2048
    batch: int = 1
    gc: bool = False
    sides: tuple[str, ...] = ("tunewise",)
    model: str = "llama3-8b"  # a MODELS key


def shape_of(row: Row, tiny: bool) -> dict:
    """The row's model config fields; with --tiny, TINY in the row's model family."""
    shape = MODELS[row.model]
    if not tiny:
        return shape
    family = shape["model_type"]
    return {**TINY, "model_type": family, **{k: v for k, v in shape.items() if "softcapping" in k},
            **TINY_FAMILY.get(family, {})}


ABLATION = ("t-none", "t-loss", "t-liger-loss", "t-kernels", "t-lora", "tunewise", "t-compile")
ROWS = {
    "lora-2048x4-gc": Row(
        "LoRA 8B 2048×4 GC on", "lora", 2048, 4, True, ("tunewise", "t-mb2-rc", "t-mb2")
    ),
    "lora-2048x2": Row("LoRA 8B 2048×2 GC off", "lora", 2048, 2, False),
    "lora-4096x1-gc": Row(
        "LoRA 8B 4096×1 GC on", "lora", 4096, 1, True, ("tunewise", "t-ckpt75", "t-ckpt56-rc")
    ),
    "ablate-2048x4-gc": Row("LoRA 8B 2048×4 GC on", "lora", 2048, 4, True, ABLATION),
    "ablate-2048x2": Row("LoRA 8B 2048×2 GC off", "lora", 2048, 2, False, ABLATION),
    "qwen25-7b-2048x4-gc": Row("LoRA Qwen2.5-7B 2048×4 GC on", "lora", 2048, 4, True, model="qwen25-7b"),
    "mistral-7b-2048x4-gc": Row("LoRA Mistral-7B 2048×4 GC on", "lora", 2048, 4, True, model="mistral-7b"),
    "gemma2-9b-2048x4-gc": Row(
        "LoRA Gemma-2-9B 2048×4 GC on", "lora", 2048, 4, True, ("tunewise", "t-eager"), model="gemma2-9b"
    ),
    "qlora-2048x1": Row("QLoRA 8B 2048×1 GC on", "qlora", 2048, 1, True),
    "maxctx": Row("LoRA 8B batch 1 GC on, longest context", "maxctx", 0, 1, True),
    "qlora-maxctx": Row("QLoRA 8B batch 1 GC on, longest context, GPU capped at 80 GiB", "qlora-maxctx", 0, 1, True),
    "banking77": Row(
        "135M full FT, Banking77 (padded vs packed)",
        "banking77",
        128,
        32,
        False,
        ("tunewise", "t-packed", "t-packed-flex"),
    ),
}
OFF = {"loss": "off", "kernels": False, "fused_lora": False}
SIDES = {  # tunewise variants: train.fast overrides, plus packing and attention (else what `tunewise train` picks)
    "tunewise": {"fast": {}},
    # the fast path on transformers' default eager attention (Gemma 2: seq² scores) instead of FlexAttention
    "t-eager": {"fast": {}, "attn": "eager"},
    # the automatic plan free to offload kept layers (train/fast/offload.py; the name earlier runs use for what is
    # the default since round off5 of 2026-11-30), and not offloading (the default before it)
    "t-offload": {"fast": {"offload_kept_layers": "auto"}},
    "t-nooff": {"fast": {"offload_kept_layers": 0}},
    # the defaults without the decoder stack's CUDA graphs (train/fast/graphs.py; on by default since 2026-11-30)
    "t-nographs": {"fast": {"cuda_graphs": False}},
    # one example per micro-step replayed from CUDA graphs, nothing offloaded (graphs and offload exclude each other)
    "t-mb1-g": {"fast": {"micro_batch_size": 1, "offload_kept_layers": 0, "cuda_graphs": True}},
    "t-mb1-g-c5": {"fast": {"micro_batch_size": 1, "offload_kept_layers": 0, "cuda_graphs": True,
                            "checkpoint_layers": 0.15625, "recompute_elementwise": True}},
    "t-mb1-g-at-17.7": {"fast": {"micro_batch_size": 1, "offload_kept_layers": 0, "cuda_graphs": True,
                                 "memory_budget_gib": 17.7}},
    # Llama-3-8B at Unsloth's / HF + Liger's measured peaks (17.7 / 19.65 GiB, 2026-11-30) without offload, with the
    # stack's graphs at any micro-step size or without them: can replayed small micro-steps beat offloading?
    "t-g-at-17.7": {"fast": {"offload_kept_layers": 0, "cuda_graphs": True, "memory_budget_gib": 17.7}},
    "t-ng-at-17.7": {"fast": {"offload_kept_layers": 0, "cuda_graphs": False, "memory_budget_gib": 17.7}},
    "t-g-at-19.65": {"fast": {"offload_kept_layers": 0, "cuda_graphs": True, "memory_budget_gib": 19.65}},
    # QLoRA (no automatic plan: every layer checkpointed by default) with kept layers offloaded instead, all or half
    "t-q-off32": {"fast": {"checkpoint_layers": 0.0, "recompute_elementwise": True, "offload_kept_layers": 32}},
    "t-q-off16": {"fast": {"checkpoint_layers": 0.5, "recompute_elementwise": True, "offload_kept_layers": 16}},
    # Mistral-7B at 2048×4 with more layers offloaded than the plan's link share allows (16 of 32, 15 checkpointed,
    # predicted within plain's peak): does the host link carry them without the backward waiting?
    "t-offload16": {
        "fast": {"micro_batch_size": 4, "checkpoint_layers": 0.46875, "recompute_elementwise": True,
                 "offload_kept_layers": 16}
    },
    "t-none": {"fast": OFF},  # the fast path with every component off: the noise floor against base
    "t-loss": {"fast": {**OFF, "loss": "chunked"}},
    "t-liger-loss": {"fast": {**OFF, "loss": "liger"}},
    "t-kernels": {"fast": {**OFF, "kernels": True}},
    "t-lora": {"fast": {**OFF, "fused_lora": True}},
    "t-ckpt75": {"fast": {"checkpoint_layers": 0.75}},
    "t-ckpt50": {"fast": {"checkpoint_layers": 0.5}},
    # 14 of 32 layers not recomputed, keeping recipes instead of their elementwise tensors (batch 1 cannot be
    # split into micro-batches): predicted ~22 GiB, under the 4096×1 baseline's 22.4.
    "t-ckpt56-rc": {"fast": {"checkpoint_layers": 0.5625, "recompute_elementwise": True}},
    # The device batch in micro-batches of 1 (accumulation, same examples per step) with no recompute.
    "t-mb1": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0}},
    "t-mb2": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0}},
    "t-mb2-rc": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True}},
    # t-mb2-rc without Liger's Triton kernels (torch's own ops): is their Python launch cost worth it here?
    "t-mb2-rc-nokern": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "kernels": False}
    },
    # t-mb2-rc with Liger's RMSNorm instead of torch's fused one (torch's is the default)
    "t-mb2-rc-ligernorm": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "rms_norm": "liger"}
    },
    "t-mb2-rc-flash": {  # FlashAttention-2 first instead of torch's default (cuDNN on the H100)
        "fast": {
            "micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "sdpa_backend": "flash"
        }
    },
    # t-mb2-rc one change at a time: without grouped q/k/v + gate/up LoRA, and also without the frozen GC.
    "t-mb2-rc-nogroup": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.0, "recompute_elementwise": True, "grouped_lora": False}
    },
    "t-mb2-rc-nogroup-nofreeze": {
        "fast": {
            "micro_batch_size": 2,
            "checkpoint_layers": 0.0,
            "recompute_elementwise": True,
            "grouped_lora": False,
            "freeze_gc": False,
        }
    },
    "t-mb2-rc-ckpt9": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.09375, "recompute_elementwise": True}
    },
    "t-mb1-cudnn": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0, "sdpa_backend": "cudnn"}},
    "t-cudnn": {"fast": {"sdpa_backend": "cudnn"}},
    "t-mb1-compile": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0, "compile": True, "kernels": False}},
    "t-mb1-graphs": {
        "fast": {
            "micro_batch_size": 1,
            "checkpoint_layers": 0.0,
            "compile": True,
            "compile_mode": "reduce-overhead",
            "kernels": False,
        }
    },
    "t-mb2-ckpt25": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.25}},
    "t-ckpt69": {"fast": {"checkpoint_layers": 0.6875}},
    "t-mb2-ckpt28": {"fast": {"micro_batch_size": 2, "checkpoint_layers": 0.28125}},
    "t-mb2-ckpt28-compile": {
        "fast": {"micro_batch_size": 2, "checkpoint_layers": 0.28125, "compile": True, "kernels": False}
    },
    "t-mb1-compile-liger": {"fast": {"micro_batch_size": 1, "checkpoint_layers": 0.0, "compile": True}},
    "t-compile": {"fast": {"compile": True}},
    # The defaults with the automatic plan's memory budget set to another side's measured peak in the same call
    # (run that side first): tunewise at Unsloth's or HF + Liger's memory, the issue's like-for-like rows.
    "t-at-unsloth": {"fast": {}, "match": "unsloth"},
    "t-at-hf-liger": {"fast": {}, "match": "hf-liger"},
    "t-offload-at-unsloth": {"fast": {"offload_kept_layers": "auto"}, "match": "unsloth"},
    "t-offload-at-hf-liger": {"fast": {"offload_kept_layers": "auto"}, "match": "hf-liger"},
    "t-packed": {"fast": {}, "packing": True},
    "t-packed-flex": {"fast": {}, "packing": True, "attn": "flex_attention"},
}
