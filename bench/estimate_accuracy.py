"""Estimate vs measurement: peak memory and step time of LoRA / QLoRA training steps.

GPU (the numbers for bench/results/estimate_accuracy.md, the default --out):
    python -m bench.estimate_accuracy
CPU check at toy size (memory there is tensor bytes: weights + grads + optimizer state + saved activations):
    python -m bench.estimate_accuracy --tiny --out /tmp/estimate_tiny.md

Models have random weights built from a config (meta-device init, materialised in bf16 on the GPU): the
Llama-3-8B shape and the embedded SmolLM2-135M shape. Each case runs tunewise's own method wiring
(tunewise.train.methods.apply_method), bf16 autocast, fused AdamW, `--steps` optimizer steps, of which the first
two are warm-up and not timed. Needs torch, transformers, peft (+ bitsandbytes for QLoRA)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from bench import RESULTS
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


CONFIGS = {"Llama-3-8B": LLAMA3_8B, "SmolLM2-135M": SMOLLM2_135M, "toy": TOY}


def cases(tiny: bool) -> list[tuple[str, str, list[tuple[int, int]]]]:
    """(model name, method, [(batch, seq), ...]): one model build per entry."""
    if tiny:
        return [("toy", "lora", [(1, 64), (4, 128), (2, 256)]), ("toy", "full", [(2, 128)])]
    seqs = [(1, s) for s in (512, 1024, 2048, 4096)]
    return [("Llama-3-8B", "lora", seqs), ("Llama-3-8B", "qlora", seqs),
            ("SmolLM2-135M", "lora", [(8, 256), (8, 1024), (4, 4096)]),
            ("SmolLM2-135M", "full", [(32, 64), (8, 1024)])]


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


def estimate_row(m: dict) -> list[str]:
    """One table row from a measurement, with the estimator as it is now (so the table can be rebuilt from
    saved measurements after the estimator changes, without re-measuring)."""
    est = estimate(ModelShape.from_config(CONFIGS[m["model"]]), m["method"], batch_size=m["batch"],
                   seq_len=m["seq"], tokens_per_epoch=m["batch"] * m["seq"], epochs=1, device=m["device_key"],
                   fp32_master=False)  # build() makes every model bf16, full fine-tuning included
    peak, step_s = m["peak_gib"], m["step_s"]
    mem_err = (est.peak_memory_gib - peak) / peak * 100
    step_est = est.seconds_per_epoch  # one epoch of batch x seq tokens = one optimizer step
    time_err = (step_est - step_s) / step_s * 100
    return [m["model"], m["method"], f"{m['batch']}x{m['seq']}", f"{est.peak_memory_gib:.2f}", f"{peak:.2f}",
            f"{mem_err:+.1f}%", f"{step_est * 1000:.0f}", f"{step_s * 1000:.0f}", f"{time_err:+.1f}%"]


def measure_group(name, config, method, shapes, steps, device) -> Iterator[dict]:
    """Build the model once per (model, method), then measure each (batch, seq) on it, yielding each row."""
    _free(device)
    model = build(config, method, device)
    for batch, seq in shapes:
        _free(device)
        if device == "cuda":  # the peak from here on: the weights plus one training step's tensors
            torch.cuda.reset_peak_memory_stats()
        try:
            peak, step_s = measure(model, batch, seq, steps, device)
        except torch.OutOfMemoryError:
            peak, step_s = float("nan"), float("nan")
        yield {"model": name, "method": method, "batch": batch, "seq": seq, "peak_gib": peak,
               "step_s": step_s, "device_key": device_key(device)}
    model = None
    _free(device)


def _free(device: str) -> None:
    # peft models hold reference cycles: without a collection the previous case's 16 GB of weights stay
    # allocated and inflate the next peak (the first run of this bench measured exactly that).
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


HEADER = ["model", "method", "batch x seq", "est. GiB", "measured GiB", "mem err", "est. ms/step",
          "measured ms/step", "time err"]


def write_table(path: Path, note: str, measured: list[dict]) -> None:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(estimate_row(m)) + " |" for m in measured]
    path.write_text("# Training estimate vs measurement\n\n" + note + "\n" + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy shapes on CPU")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--only", help="substring of 'model method' to run, e.g. Llama or qlora")
    ap.add_argument("--out", type=Path, help="markdown file for the table (default "
                    "bench/results/estimate_accuracy.md; required with --tiny, which must not overwrite it)")
    ap.add_argument("--json", type=Path, help="measurements file (default: --out with .json)")
    ap.add_argument("--from-json", action="store_true",
                    help="re-estimate saved measurements with the current estimator; no model is run")
    a = ap.parse_args()
    if a.out is None and a.tiny:
        ap.error("--tiny needs --out: the default is the committed GPU table")
    a.out = a.out or RESULTS / "estimate_accuracy.md"
    json_path = a.json or a.out.with_suffix(".json")
    if a.from_json:
        saved = json.loads(json_path.read_text())
        write_table(a.out, saved["note"], saved["rows"])
        print(a.out.read_text())
        return
    device = "cpu" if a.tiny or not torch.cuda.is_available() else "cuda"
    torch.manual_seed(0)
    where = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (tensor bytes, not allocator peak)"
    print(f"device: {where}", flush=True)
    import transformers

    note = (f"Device: {where}; torch {torch.__version__}, transformers {transformers.__version__}. "
            f"Command: `python -m bench.estimate_accuracy {' '.join(sys.argv[1:])}`.\n")
    measured: list[dict] = []
    for name, method, shapes in cases(a.tiny):
        if a.only and a.only not in f"{name} {method}":
            continue
        for m in measure_group(name, CONFIGS[name], method, shapes, a.steps, device):
            measured.append(m)
            print("| " + " | ".join(estimate_row(m)) + " |", flush=True)
            # Written after every row: a run cut off by a time limit still leaves what it measured.
            json_path.write_text(json.dumps({"note": note, "rows": measured}, indent=1))
            write_table(a.out, note, measured)
    print(f"wrote {a.out} and {json_path}")


if __name__ == "__main__":
    main()
