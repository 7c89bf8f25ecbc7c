"""Estimate vs measurement: peak memory and step time of LoRA / QLoRA training steps.

GPU (the numbers for bench/estimate_accuracy.md):
    python bench/estimate_accuracy.py --out bench/estimate_accuracy.md
CPU check at toy size (memory there is tensor bytes: weights + grads + optimizer state + saved activations):
    python bench/estimate_accuracy.py --tiny --out /tmp/estimate_tiny.md

Models have random weights built from a config (meta-device init, materialised in bf16 on the GPU): the
Llama-3-8B shape and the embedded SmolLM2-135M shape. Each case runs tunewise's own method wiring
(tunewise.train.methods.apply_method), bf16 autocast, fused AdamW, `--steps` optimizer steps, of which the first
two are warm-up and not timed. Needs torch, transformers, peft (+ bitsandbytes for QLoRA)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunewise.config import TrainConfig
from tunewise.models.estimate import DEVICES, ModelShape, estimate, saved_activation_bytes
from tunewise.train.methods import apply_method

LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "tie_word_embeddings": False, "rope_theta": 500000.0, "max_position_embeddings": 8192}
SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
                "tie_word_embeddings": True, "max_position_embeddings": 8192}
TOY = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
       "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 2000, "tie_word_embeddings": False,
       "max_position_embeddings": 4096}


def cases(tiny: bool) -> list[tuple[str, dict, str, int, int]]:
    """(name, config, method, batch, seq)."""
    if tiny:
        return [("toy", TOY, "lora", b, s) for b, s in ((1, 64), (4, 128), (2, 256))] + \
               [("toy", TOY, "full", 2, 128)]
    out = [("Llama-3-8B", LLAMA3_8B, m, 1, s) for m in ("lora", "qlora") for s in (512, 1024, 2048, 4096)]
    return out + [("SmolLM2-135M", SMOLLM2_135M, "lora", b, s) for b, s in ((8, 256), (8, 1024), (4, 4096))]


def build(config: dict, method: str, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in config.items() if k != "model_type"})
    cfg._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model = model.to_empty(device="cpu" if method == "qlora" else device).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    if method == "qlora":
        model = quantize_nf4(model, device)
    return apply_method(model, TrainConfig(method=method))


def quantize_nf4(model, device: str):
    """Swap every decoder Linear for a bitsandbytes NF4 Linear4bit (what from_pretrained does for QLoRA)."""
    import bitsandbytes as bnb

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if isinstance(lin, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False,
                                          compute_dtype=torch.bfloat16, quant_type="nf4", compress_statistics=True)
                    q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4",
                                                 compress_statistics=True)
                    setattr(parent, name, q)
    model = model.to(device)
    model.is_loaded_in_4bit = True
    return model


def tensor_bytes(model, opt) -> int:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    states = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    return params + grads + states


def measure(model, batch: int, seq: int, steps: int, device: str) -> tuple[float, float]:
    """(peak GiB, seconds per step)."""
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=device == "cuda")
    model.train()
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps):
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:  # CPU: exact tensor bytes, with gradients present as at the end of backward
        model(input_ids=ids, labels=ids).loss.backward()
        peak = tensor_bytes(model, opt) + saved_activation_bytes(model, ids)
    return peak / 1024**3, sum(times) / len(times)


def device_key(device: str) -> str:
    if device == "cpu":
        return "CPU"
    name = torch.cuda.get_device_name(0).upper().replace(" ", "")
    return next((k for k in DEVICES if k.upper() in name), "H100")


def run_case(name, config, method, batch, seq, steps, device) -> list[str]:
    est = estimate(ModelShape.from_config(config), method, batch_size=batch, seq_len=seq,
                   tokens_per_epoch=batch * seq, epochs=1, device=device_key(device))
    try:
        model = build(config, method, device)
        peak, step_s = measure(model, batch, seq, steps, device)
    except torch.OutOfMemoryError:
        peak, step_s = float("nan"), float("nan")
    finally:
        model = None
        if device == "cuda":
            torch.cuda.empty_cache()
    mem_err = (est.peak_memory_gib - peak) / peak * 100
    time_err = (est.seconds_per_epoch - step_s) / step_s * 100
    return [name, method, f"{batch}x{seq}", f"{est.peak_memory_gib:.2f}", f"{peak:.2f}", f"{mem_err:+.1f}%",
            f"{est.seconds_per_epoch * 1000:.0f}", f"{step_s * 1000:.0f}", f"{time_err:+.1f}%"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy shapes on CPU")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--only", help="substring of the model name to run, e.g. Llama")
    ap.add_argument("--out", type=Path, required=True, help="markdown file for the table")
    a = ap.parse_args()
    device = "cpu" if a.tiny or not torch.cuda.is_available() else "cuda"
    torch.manual_seed(0)
    header = ["model", "method", "batch x seq", "est. GiB", "measured GiB", "mem err", "est. ms/step",
              "measured ms/step", "time err"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (tensor bytes, not allocator peak)"
    print(f"device: {where}", flush=True)
    import transformers

    note = (f"Device: {where}; torch {torch.__version__}, transformers {transformers.__version__}. "
            f"Command: `python bench/estimate_accuracy.py {' '.join(sys.argv[1:])}`.\n")
    for case in cases(a.tiny):
        if a.only and a.only not in case[0]:
            continue
        row = run_case(*case, a.steps, device)
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
        # Written after every row: a run cut off by a time limit still leaves what it measured.
        a.out.write_text("# Training estimate vs measurement\n\n" + note + "\n" + "\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
