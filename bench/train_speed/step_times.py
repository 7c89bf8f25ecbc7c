"""Where a `tunewise train` run's time goes, micro-step by micro-step: the batch's shape, its forward + backward
time (the GPU synchronised before and after), whether its shape came before, and the optimizer step's time; then
a profile of a few micro-steps (the host ops that take the time, most first). Same model and data as
`python -m bench.multi_gpu` (Llama-3.2-1B shape, random weights, ~500-word topic documents).

  python -m bench.train_speed.step_times --steps 30 --set train.fast.cuda_graphs=false   # one H200, ~1 min
  python -m bench.train_speed.step_times --size toy --steps 4                           # CPU: the script only
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.multi_gpu import build_model, write_config


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Recorder:
    """Wraps the trainer's training_step and optimizer step: one record per micro-step and per optimizer step."""

    def __init__(self, profile_from: int, profile_n: int):
        self.records: list[dict] = []
        self.shapes: set = set()
        self.profile_from, self.profile_n, self.prof, self.table = profile_from, profile_n, None, ""

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
            rec.records.append({"kind": "micro", "shape": list(shape), "new": shape not in rec.shapes,
                                "seconds": time.perf_counter() - t0, "at": t0})
            rec.shapes.add(shape)
            if rec.prof is not None and n + 1 == rec.profile_from + rec.profile_n:
                rec.prof.__exit__(None, None, None)
                rec.table = rec.prof.key_averages().table(sort_by="cpu_time_total", row_limit=30,
                                                          max_name_column_width=60)
                rec.prof = None
            return loss

        trainer_cls.training_step = training_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1b", choices=["1b", "3b", "toy"])
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
    ap.add_argument("--max-examples", type=int, help="with --data: the first this many training examples")
    ap.add_argument("--set", action="append", default=[], help="a config override, as tunewise train --set")
    a = ap.parse_args()

    from tunewise.config import load_config, parse_overrides
    from tunewise.pipeline import RunFolder, stage_data, stage_model
    from tunewise.train import train
    from tunewise.train.callbacks import GuardedTrainer

    a.workdir.mkdir(parents=True, exist_ok=True)
    model = build_model(a.workdir / f"model-{a.size}", a.size)
    config = write_config(a.workdir, model, a)
    own = ["name=step-times"]
    if a.data:
        own += [f"data.paths=[{a.data.resolve()}]", f"data.label_field={a.label_field}", "data.split.val=200",
                "data.split.test=8"] + ([f"data.max_train_examples={a.max_examples}"] if a.max_examples else [])
    cfg = load_config(config, parse_overrides([*own, *a.set]))
    run = RunFolder(cfg)
    rec = Recorder(a.profile_from, a.profile_n)
    rec.wrap(GuardedTrainer)
    result = train(cfg, stage_data(cfg, run), stage_model(cfg, run))
    micro = [r for r in rec.records if r["kind"] == "micro"]
    new = [r["seconds"] for r in micro[1:] if r["new"]]
    seen = [r["seconds"] for r in micro[1:] if not r["new"]]
    summary = {"sets": a.set, "micro_steps": len(micro), "shapes": len(rec.shapes),
               "tokens_per_second": result.tokens_per_second, "fast_path": result.fast_path,
               "median_new_shape_s": statistics.median(new) if new else None,
               "median_seen_shape_s": statistics.median(seen) if seen else None,
               "first_s": micro[0]["seconds"] if micro else None,
               "new_shapes_total_s": sum(new), "seen_shapes_total_s": sum(seen), "train_seconds": result.seconds,
               "examples": result.examples,
               "cudnn_sdp": torch.backends.cuda.cudnn_sdp_enabled() if torch.cuda.is_available() else None}
    print(json.dumps(summary, indent=1))
    for r in micro[:60]:
        print(f"{'new ' if r['new'] else 'seen'} {str(r['shape']):>12} {r['seconds'] * 1e3:8.1f} ms")
    print(rec.table)
    if a.out:
        a.out.write_text(json.dumps({"summary": summary, "records": micro, "profile": rec.table}, indent=1))


if __name__ == "__main__":
    main()
