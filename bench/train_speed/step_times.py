"""Where a `tunewise train` run's time goes, micro-step by micro-step: the batch's shape, its forward + backward
time (the GPU synchronised before and after), whether its shape came before and the time until the next one
starts; the run's GPU peak and its peak before the first evaluation; then a profile of a few micro-steps (the host
ops that take the time, most first). Same model and data as `python -m bench.multi_gpu`
(Llama-3.2-1B shape, random weights, ~500-word topic documents), or --data (a CSV/JSONL of text and label).

With --sides, each named side runs in its own process on the same data and a table compares them, plain
transformers + PEFT (`plain`: the fast path off) among them:

  python -m bench.train_speed.step_times --sides defaults,no-graphs,plain            # one H200, ~3 min
  python -m bench.train_speed.step_times --batch 8 --data banking77/train.csv --label-field category \
      --max-examples 4000 --sides defaults,masked,no-graphs-masked,plain              # one H200, ~8 min
  python -m bench.train_speed.step_times --steps 30 --set train.fast.cuda_graphs=false  # one run, its records
  python -m bench.train_speed.step_times --size toy --steps 4 --sides defaults,plain    # CPU: the script only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.multi_gpu import build_model, write_config

# name → the settings the side runs with (on top of --set): the defaults, without CUDA graphs, with the padding
# mask and each batch at its own longest row (train.fast.causal_padding and train.pad_to_multiple_of off), both,
# and plain transformers + PEFT
SIDES = {
    "defaults": [],
    "no-graphs": ["train.fast.cuda_graphs=false"],
    # without graphs, each batch at its own longest row: what padding to multiples of 64 costs where the GPU is busy
    "no-graphs-pad1": ["train.fast.cuda_graphs=false", "train.pad_to_multiple_of=1"],
    "masked": ["train.fast.causal_padding=false", "train.pad_to_multiple_of=1"],
    "no-graphs-masked": ["train.fast.cuda_graphs=false", "train.fast.causal_padding=false",
                         "train.pad_to_multiple_of=1"],
    "plain": ["train.fast.enabled=false"],
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Recorder:
    """Wraps the trainer's training_step: one record per micro-step (its width, whether new, its seconds)."""

    def __init__(self, profile_from: int, profile_n: int):
        self.records: list[dict] = []
        self.shapes: set = set()
        self.profile_from, self.profile_n, self.prof, self.table = profile_from, profile_n, None, ""
        self.train_peak_gib: float | None = None  # the GPU's peak when the first evaluation starts

    def wrap(self, trainer_cls) -> None:
        inner = trainer_cls.training_step
        rec = self

        def training_step(self, model, inputs, num_items_in_batch=None):
            shape = tuple(inputs["input_ids"].shape)
            n = len(rec.records)
            if n == rec.profile_from:
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                rec.prof = profile(activities=acts)
                rec.prof.__enter__()
            _sync()
            t0 = time.perf_counter()
            loss = inner(self, model, inputs, num_items_in_batch)
            _sync()
            rec.records.append({"shape": list(shape), "new": shape not in rec.shapes,
                                "seconds": time.perf_counter() - t0, "at": t0})
            rec.shapes.add(shape)
            if rec.prof is not None and n + 1 == rec.profile_from + rec.profile_n:
                rec.prof.__exit__(None, None, None)
                rec.table = rec.prof.key_averages().table(sort_by="cpu_time_total", row_limit=30,
                                                          max_name_column_width=60)
                rec.prof = None
            return loss

        trainer_cls.training_step = training_step
        inner_evaluate = trainer_cls.evaluate

        def evaluate(self, *args, **kwargs):
            if torch.cuda.is_available() and rec.train_peak_gib is None:
                rec.train_peak_gib = torch.cuda.max_memory_allocated() / 2**30
            return inner_evaluate(self, *args, **kwargs)

        trainer_cls.evaluate = evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1b", choices=["1b", "3b", "8b", "toy"])
    ap.add_argument("--layers", type=int, help="the shape with this many decoder layers instead")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--method", default="lora")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--profile-from", type=int, default=6, help="first profiled micro-step (0-based)")
    ap.add_argument("--profile-n", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tunewise-step-times"))
    ap.add_argument("--out", type=Path, help="write the records and the profile here (JSON)")
    ap.add_argument("--data", type=Path, help="train on this CSV/JSONL (text, label columns) instead of the "
                    "generated documents: every example once (--steps is then ignored)")
    ap.add_argument("--label-field", default="label")
    ap.add_argument("--max-examples", type=int,
                    help="with --data: this many training examples (data.max_train_examples: a seeded subsample)")
    ap.add_argument("--set", action="append", default=[], help="a config override, as tunewise train --set")
    ap.add_argument("--sides", help=f"comma-separated, each in its own process, then a table: {', '.join(SIDES)}")
    ap.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sides:
        return compare(a)

    from tunewise.config import load_config, parse_overrides
    from tunewise.pipeline import RunFolder, stage_data, stage_model
    from tunewise.train import train
    from tunewise.train.callbacks import GuardedTrainer

    a.workdir.mkdir(parents=True, exist_ok=True)
    model = build_model(a.workdir / f"model-{a.size}{f'-{a.layers}' if a.layers else ''}", a.size, a.layers)
    config = write_config(a.workdir, model, a)
    own = [f"name=step-times-{a.side or 'run'}", *(SIDES[a.side] if a.side else [])]
    if a.data:
        own += [f"data.paths=[{a.data.resolve()}]", f"data.label_field={a.label_field}", "data.split.val=200",
                "data.split.test=8"] + ([f"data.max_train_examples={a.max_examples}"] if a.max_examples else [])
    cfg = load_config(config, parse_overrides([*own, *a.set]))
    run = RunFolder(cfg)
    rec = Recorder(a.profile_from, a.profile_n)
    rec.wrap(GuardedTrainer)
    result = train(cfg, stage_data(cfg, run), stage_model(cfg, run))
    micro = rec.records
    new = [r["seconds"] for r in micro[1:] if r["new"]]
    seen = [r["seconds"] for r in micro[1:] if not r["new"]]
    # from one micro-step's end to the next one's start: the optimizer step and the Trainer's bookkeeping
    between = [b["at"] - a["at"] - a["seconds"] for a, b in zip(micro[1:], micro[2:])]
    summary = {"side": a.side, "sets": [*(SIDES[a.side] if a.side else []), *a.set], "micro_steps": len(micro),
               "shapes": len(rec.shapes),
               "tokens_per_second": result.tokens_per_second, "fast_path": result.fast_path,
               "median_new_shape_s": statistics.median(new) if new else None,
               "median_seen_shape_s": statistics.median(seen) if seen else None,
               "first_s": micro[0]["seconds"] if micro else None,
               "new_shapes_total_s": sum(new), "seen_shapes_total_s": sum(seen), "train_seconds": result.seconds,
               "median_between_s": statistics.median(between) if between else None,
               "examples": result.examples, "peak_gib": result.peak_gpu_memory_gib,
               "train_peak_gib": rec.train_peak_gib,
               "predicted_peak_gib": ((result.fast_path or {}).get("plan") or {}).get("peak_gib")
               or (result.estimate or {}).get("peak_memory_gib"),
               "cudnn_sdp": torch.backends.cuda.cudnn_sdp_enabled() if torch.cuda.is_available() else None}
    print(json.dumps(summary, indent=1))
    for r in micro[:60]:
        print(f"{'new ' if r['new'] else 'seen'} {str(r['shape']):>12} {r['seconds'] * 1e3:8.1f} ms")
    print(rec.table)
    if a.out:
        a.out.write_text(json.dumps({"summary": summary, "records": micro, "profile": rec.table}, indent=1))


def _gib(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def compare(a: argparse.Namespace) -> None:
    """Run each side of --sides in its own process (same arguments), then print one table."""
    names = [n.strip() for n in a.sides.split(",") if n.strip()]
    unknown = [n for n in names if n not in SIDES]
    if unknown:
        raise SystemExit(f"--sides: unknown {unknown}; known: {', '.join(SIDES)}")
    same = ["--size", a.size, "--steps", str(a.steps), "--batch", str(a.batch), "--lr", str(a.lr), "--method",
            a.method, "--gpus", str(a.gpus), "--workdir", str(a.workdir), "--label-field", a.label_field,
            *(["--layers", str(a.layers)] if a.layers else []),
            "--profile-from", str(a.profile_from), "--profile-n", str(a.profile_n),
            *(["--data", str(a.data)] if a.data else []),
            *(["--max-examples", str(a.max_examples)] if a.max_examples else []),
            *(arg for s in a.set for arg in ("--set", s))]
    a.workdir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in names:
        out = a.workdir / f"side-{name}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.train_speed.step_times", *same, "--side", name, "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode or not out.is_file():
            print(f"{name}: exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}", flush=True)
            continue
        rows[name] = json.loads(out.read_text())["summary"]
    plain = rows.get("plain", {}).get("tokens_per_second")
    lines = ["| side | settings | widths | micro-steps | tokens/s | × plain | training s | new width: median s | "
             "seen width: median s | between: median s | replayed | peak GiB: run, before evaluation (predicted) |",
             "|---" * 12 + "|"]
    for name, r in rows.items():
        steps = (r["fast_path"] or {}).get("graph_steps") or {}
        ratio = f"{r['tokens_per_second'] / plain:.2f}×" if plain else "–"
        new, seen = r["median_new_shape_s"], r["median_seen_shape_s"]
        lines.append(f"| {name} | {' '.join(r['sets']) or '(none)'} | {r['shapes']} | {r['micro_steps']} | "
                     f"{r['tokens_per_second']:,.0f} | {ratio} | {r['train_seconds']:.1f} | "
                     f"{_s(new)} | {_s(seen)} | "
                     f"{_s(r.get('median_between_s'))} | {steps.get('replays', '–')} | {_gib(r.get('peak_gib'))}, "
                     f"{_gib(r.get('train_peak_gib'))} ({_gib(r.get('predicted_peak_gib'))}) |")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n`tunewise train` on {device}, {a.size} shape, batch {a.batch}, "
          f"{a.data.name if a.data else 'generated documents'}; tokens/s: non-padding tokens after the first "
          "optimizer step\n")
    print("\n".join(lines))
    if a.out:
        a.out.write_text(json.dumps({"args": same, "sides": rows}, indent=1))


if __name__ == "__main__":
    main()
