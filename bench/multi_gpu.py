"""One config, 1 GPU vs N: `tunewise train` alone, under torchrun (DDP, then FSDP via train.fsdp) and under
accelerate launch with the shipped FSDP config, all with the same global batch. Prints (and with --out writes)
a table: mode, GPUs, global batch, tokens/s, final validation loss, its difference from one GPU, speed-up.

GPU (2×H200, the issue's check: loss within 2 %, speed-up at least 1.8×; a few minutes):
    python -m bench.multi_gpu --out bench/results/multi_gpu.md
CPU check at toy size (gloo; DDP only, since accelerate has no FSDP on CPU; speed is not judged there):
    python -m bench.multi_gpu --size toy

The model is a random-weight Llama of a real shape (default: Llama-3.2-1B's, 1.24 B parameters), written once
with save_pretrained (safetensors) under --workdir; the tokenizer is the word-level one the tests build
(tunewise/testing.py). The data are synthetic topic documents of ~500 words (tunewise/testing.py) with
20 % of labels redrawn at random, so the loss cannot go to zero. LoRA dropout is 0 so the runs differ only by
how they are parallelised; the example order is the same on 1 or N GPUs (tunewise groups lengths by the
global batch). tokens/s is tunewise's own steady rate (train_result.json, after the first optimizer step).
Needs: torch, transformers, peft, accelerate, and tunewise's imports (pydantic, typer, rich, pyyaml,
phonenumbers, python-stdnum); missing ones are named at the start."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {  # Llama-3.2 shapes (their config.json), vocabulary included: the loss over 128k logits is real work
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    "3b": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True},
    # Llama-3-8B (its config.json): for step_times' runs at the shape of bench.train_speed's main row
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False},
    "toy": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": True},
}
NEEDED = ["torch", "transformers", "peft", "accelerate", "pydantic", "typer", "rich", "yaml", "phonenumbers",
          "stdnum", "safetensors", "tokenizers"]


def build_model(folder: Path, size: str, layers: int | None = None) -> Path:
    """Random weights (seed 0), bf16 on a GPU, saved as safetensors; reused when already there. layers: the
    shape's decoder layer count replaced (what scales the host's per-module work, at any width)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunewise.testing import build_tokenizer

    shape = {**SHAPES[size], **({"num_hidden_layers": layers} if layers else {})}
    marker = folder / "shape.json"
    if marker.is_file() and json.loads(marker.read_text()) == shape:
        return folder
    tok = build_tokenizer()
    cfg = LlamaConfig(**shape, max_position_embeddings=4096, rope_theta=500000.0, bos_token_id=1,
                      eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    marker.write_text(json.dumps(shape))
    return folder


def write_config(work: Path, model: Path, a: argparse.Namespace) -> Path:
    import yaml

    from tunewise.testing import write_topic_documents

    global_batch = a.batch * a.gpus
    n_train, n_val, n_test = global_batch * a.steps, 64 if a.size != "toy" else 16, 8
    words = (440, 500) if a.size != "toy" else (20, 30)
    data = write_topic_documents(work / "docs.jsonl", n_train + n_val + n_test, words=words, noise=0.2)
    raw = {"name": "single", "output_dir": str(work / "runs"), "seed": 42,
           "task": {"type": "classification", "instruction": "classify the text"},
           # Near-duplicate search is off: the documents are distinct by construction, and on 1,400 long ones
           # it would be most of the data stage, which every rank repeats after rank 0.
           "data": {"paths": [str(data)], "split": {"val": n_val, "test": n_test}, "dedup": {"near": False}},
           "model": {"base": str(model), "max_length": words[1] + 64},
           "train": {"method": a.method, "epochs": 1, "batch_size": a.batch, "global_batch_size": global_batch,
                     "learning_rate": a.lr, "logging_steps": 5, "eval_batch_size": a.batch, "report_to": [],
                     "save_total_limit": 1, "lora": {"dropout": 0.0}}}
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def launch(mode: str, config: Path, gpus: int, sets: list[str]) -> list[str]:
    py, train = sys.executable, ["-m", "tunewise.cli", "train", str(config), "--set", f"name={mode}",
                                 *(a for s in sets for a in ("--set", s))]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)]
    accelerate = [py, "-m", "accelerate.commands.launch", "--num_processes", str(gpus), "--config_file",
                  str(ROOT / "tunewise" / "configs" / "accelerate" / "fsdp.yaml")]
    return {"single": [py, *train], "ddp": [*torchrun, *train],
            "fsdp": [*torchrun, *train, "--set", "train.fsdp=true"],
            "fsdp-accelerate": [*accelerate, *train]}[mode]


def run_mode(mode: str, config: Path, gpus: int, timeout: int, sets: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if mode == "single":
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    cmd = launch(mode, config, gpus, sets)
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode:
        tail = (proc.stdout + proc.stderr)[-4000:]
        return {"mode": mode, "error": f"exit {proc.returncode}", "log": tail, "wall": wall}
    result = json.loads((config.parent / "runs" / mode / "train_result.json").read_text())
    return {"mode": mode, "gpus": result["world_size"], "global_batch": result["global_batch"],
            "tokens_per_second": result["tokens_per_second"], "val_loss": result["val_loss"][-1][1],
            "train_loss": result["train_loss"][-1][1], "steps": len(result["train_loss"]),
            "peak_gib": result["peak_gpu_memory_gib"], "est_gib": result["estimate"]["peak_memory_gib"],
            "offloaded": (result.get("fast_path") or {}).get("host_kept_layers", 0), "wall": wall}


def table(rows: list[dict]) -> list[str]:
    base = next((r for r in rows if r["mode"] == "single" and "error" not in r), None)
    lines = ["| mode | GPUs | global batch | tokens/s | final val loss | loss diff | speed-up | last train loss "
             "| peak GiB (rank 0) | est. GiB/device | offloaded layers | wall s |", "|" + "---|" * 12]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | failed: {r['error']} |" + " |" * 10)
            continue
        diff = f"{100 * (r['val_loss'] - base['val_loss']) / base['val_loss']:+.2f} %" if base else "–"
        speed = f"{r['tokens_per_second'] / base['tokens_per_second']:.2f}×" if base else "–"
        peak = "–" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        lines.append(f"| {r['mode']} | {r['gpus']} | {r['global_batch']} | {r['tokens_per_second']:,.0f} | "
                     f"{r['val_loss']:.4f} | {diff} | {speed} | {r['train_loss']:.4f} | {peak} | "
                     f"{r['est_gib']:.1f} | {r['offloaded']} | {r['wall']:.0f} |")
    return lines


def verdict(rows: list[dict], check_speed: bool) -> list[str]:
    base = next((r for r in rows if r["mode"] == "single" and "error" not in r), None)
    out = []
    for r in rows:
        if r["mode"] == "single" or base is None:
            continue
        if "error" in r:
            out.append(f"- {r['mode']}: FAILED ({r['error']})")
            continue
        diff = abs(r["val_loss"] - base["val_loss"]) / base["val_loss"]
        speed = r["tokens_per_second"] / base["tokens_per_second"]
        ok = diff <= 0.02 and (speed >= 1.8 or not check_speed)
        out.append(f"- {r['mode']}: loss {100 * diff:.2f} % off (≤ 2 %), speed-up {speed:.2f}× "
                   f"({'≥ 1.8×' if check_speed else 'not judged on CPU'}): {'PASS' if ok else 'FAIL'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--gpus", type=int, default=2, help="processes of the multi-GPU runs")
    ap.add_argument("--batch", type=int, default=None, help="examples per device per micro-step (1b: 16)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (1b: 40, toy: 8)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--method", default="lora", choices=["lora", "dora", "full"])
    ap.add_argument("--modes", default=None, help="comma-separated; default single,ddp,fsdp,fsdp-accelerate "
                                                   "on GPUs, single,ddp on CPU")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tunewise-multigpu"))
    ap.add_argument("--timeout", type=int, default=240, help="seconds per run")
    ap.add_argument("--out", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run, as `tunewise train --set` takes it (repeatable)")
    a = ap.parse_args()
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"missing Python packages: {', '.join(missing)} (stdnum is python-stdnum, yaml is pyyaml)")
    import torch

    cuda = torch.cuda.is_available()
    a.batch = a.batch or (16 if a.size != "toy" else 4)
    a.steps = a.steps or (40 if a.size != "toy" else 8)
    modes = (a.modes or ("single,ddp,fsdp,fsdp-accelerate" if cuda else "single,ddp")).split(",")
    if cuda and torch.cuda.device_count() < a.gpus:
        sys.exit(f"--gpus {a.gpus} but only {torch.cuda.device_count()} CUDA device(s)")
    a.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = build_model(a.workdir / f"model-{a.size}", a.size)
    config = write_config(a.workdir, model, a)
    print(f"model {model} ({time.perf_counter() - t0:.0f} s); config {config}", flush=True)
    subprocess.run(["rm", "-rf", str(a.workdir / "runs")], check=True)  # a fresh run folder per bench
    rows = []
    for mode in modes:
        rows.append(run_mode(mode, config, 1 if mode == "single" else a.gpus, a.timeout, a.set))
        if "log" in rows[-1]:
            print(rows[-1]["log"], file=sys.stderr)
    device = torch.cuda.get_device_name(0) if cuda else "CPU"
    import peft
    import transformers

    head = [f"# tunewise train on 1 vs {a.gpus} devices ({device})", "",
            f"Llama-{a.size} shape, random weights; {a.method}, {a.steps} optimizer steps, "
            f"{a.batch} examples per device per micro-step, lr {a.lr}; torch {torch.__version__}, transformers "
            f"{transformers.__version__}, peft {peft.__version__}. Total {time.perf_counter() - t0:.0f} s.",
            f"Command: `python -m bench.multi_gpu {' '.join(sys.argv[1:])}`", ""]
    text = "\n".join([*head, *table(rows), "", *verdict(rows, cuda)]) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
