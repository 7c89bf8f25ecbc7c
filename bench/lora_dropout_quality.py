"""LoRA dropout 0 (tunewise's default since this comparison) vs 0.05 (the default before it): fine-tuned accuracy on
a Banking77 validation set, paired over training seeds. Each seed trains twice on the same data with the same seed
(LoRA init, data order), only `train.lora.dropout` differing, through tunewise's own training entry
(`tunewise.train.train`), and scores the model through tunewise's evaluation (`tunewise.evaluate.score_model`).
Validation and training rows are drawn once (fixed --data-seed, per class, disjoint, de-leaked) from Banking77's
train.csv; the official test set is not used (this is a validation decision).

    python -m bench.lora_dropout_quality [--data ../shared/data/banking77/train.csv] [--seeds 0 1 2 3]
        [--train-per-class 6] [--val-per-class 4] [--epochs 2] [--mode generate]

Run from the repo root with HF_HUB_OFFLINE=1 (the embedded SmolLM2-135M-Instruct loads offline). Prints the
per-seed table, the mean difference (dropout 0 − dropout 0.05) with a 95 % CI from a paired bootstrap over
validation examples (each example's differences on every seed resampled together) and a t interval over seeds,
and writes results/lora_dropout_quality.md and .json (per-example correctness)."""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bench import RESULTS
from bench.label_noise import load
from tunewise.config import EMBEDDED_MODEL, DedupConfig, RunConfig, parse_config
from tunewise.data import PreparedData, content_hash
from tunewise.data.records import Record, classification_record
from tunewise.data.split import remove_leaks
from tunewise.evaluate import score_model
from tunewise.evaluate.compare import resample_indices
from tunewise.models import ResolvedModel, load_model, resolve_model
from tunewise.train import train

ROOT = Path(__file__).resolve().parents[1]
DROPOUTS = (0.0, 0.05)
RESAMPLES = 10_000


@dataclass
class RunResult:
    seed: int
    dropout: float
    accuracy: float
    macro_f1: float
    invalid_rate: float  # generate mode: answers that parse to no label (counted wrong)
    final_train_loss: float | None  # the last logged one (every 10 steps)
    train_s: float
    eval_s: float
    predictions: list[str]
    correct: list[int]


def draw(path: Path, train_per_class: int, val_per_class: int, seed: int) -> PreparedData:
    """Per class, `val_per_class` validation rows and `train_per_class` training rows, disjoint; validation rows
    that duplicate a training row (exactly or nearly) are dropped, as tunewise's splits do."""
    texts, labels = load(path)
    rnd = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    train_rows: list[Record] = []
    val_rows: list[Record] = []
    for y in sorted(by_label):
        picked = rnd.sample(by_label[y], val_per_class + train_per_class)
        rec = [classification_record(texts[i], y, {"source": str(path), "line": i + 2}) for i in picked]
        val_rows += rec[:val_per_class]
        train_rows += rec[val_per_class:]
    rnd.shuffle(train_rows)
    val_rows, _, _ = remove_leaks(train_rows, val_rows, [], DedupConfig(), classification=True)
    # Scored as tunewise's test split; no tunewise val split, so training runs its epochs and keeps the last.
    return PreparedData(train=train_rows, val=[], test=val_rows, labels=sorted(by_label),
                        content_hash=content_hash(train_rows + val_rows))


def run_config(args: argparse.Namespace, seed: int, dropout: float, out: Path) -> RunConfig:
    """The shipped defaults (r 16, alpha 32, all-linear, warmup, ...) except dropout, seed and the budget keys."""
    return parse_config({
        "name": f"seed{seed}-dropout{dropout}", "seed": seed, "output_dir": str(out),
        "task": {"type": "classification", "instruction": "Which banking intent does this customer message express?"},
        "data": {"paths": [str(args.data)], "label_field": "category"},
        "model": {"max_length": 128},
        "train": {"method": "lora", "lora": {"dropout": dropout}, "epochs": args.epochs,
                  "learning_rate": args.lr, "batch_size": args.batch_size, "report_to": [], "logging_steps": 10},
        "eval": {"classification_mode": args.mode, "batch_size": 16},
    }, "bench.lora_dropout_quality")


def run_one(args: argparse.Namespace, data: PreparedData, base: ResolvedModel, seed: int, dropout: float,
            out: Path) -> RunResult:
    cfg = run_config(args, seed, dropout, out)
    start = time.perf_counter()
    trained = train(cfg, data, base, load_model(base.path))
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    scored = score_model(cfg, data, base, trained.weights_dir, model=trained.model)
    return RunResult(seed=seed, dropout=dropout, accuracy=scored.metrics["accuracy"],
                     macro_f1=scored.metrics["macro_f1"], invalid_rate=scored.metrics["invalid_rate"],
                     final_train_loss=trained.train_loss[-1][1] if trained.train_loss else None,
                     train_s=round(train_s, 1), eval_s=round(time.perf_counter() - start, 1),
                     predictions=scored.predictions, correct=[int(c) for c in scored.example_correct()])


def summarize(results: list[RunResult], seeds: list[int]) -> dict:
    """Mean difference dropout 0 − 0.05 in accuracy points: paired bootstrap over validation examples (all seeds
    of an example kept together, since the same examples recur on every seed) and a t interval over seeds."""
    get = {(r.seed, r.dropout): r for r in results}
    d = np.array([np.subtract(get[s, DROPOUTS[0]].correct, get[s, DROPOUTS[1]].correct) for s in seeds], float)
    per_example = d.mean(axis=0)
    boot = per_example[resample_indices(len(per_example), RESAMPLES, seed=0)].mean(axis=1)
    per_seed = d.mean(axis=1)
    t_half = stats.t.ppf(0.975, len(seeds) - 1) * per_seed.std(ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 \
        else float("nan")
    f1 = [get[s, DROPOUTS[0]].macro_f1 - get[s, DROPOUTS[1]].macro_f1 for s in seeds]
    worst = int(np.argmin(per_seed))
    return {"mean_difference": float(per_seed.mean()),
            "bootstrap_ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "bootstrap_resamples": RESAMPLES,
            "t_ci_over_seeds": [float(per_seed.mean() - t_half), float(per_seed.mean() + t_half)],
            "worst_seed": {"seed": seeds[worst], "difference": float(per_seed[worst])},
            "mean_macro_f1_difference": float(np.mean(f1))}


def table(results: list[RunResult], seeds: list[int], summary: dict | None) -> str:
    get = {(r.seed, r.dropout): r for r in results}
    lines = ["| seed | acc dropout 0 | acc dropout 0.05 | diff (0 − 0.05) | macro-F1 0 | macro-F1 0.05 | "
             "invalid 0 / 0.05 | train + eval s (0 / 0.05) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in seeds:
        a, b = get[s, DROPOUTS[0]], get[s, DROPOUTS[1]]
        lines.append(f"| {s} | {a.accuracy:.3f} | {b.accuracy:.3f} | {a.accuracy - b.accuracy:+.3f} | "
                     f"{a.macro_f1:.3f} | {b.macro_f1:.3f} | {a.invalid_rate:.3f} / {b.invalid_rate:.3f} | "
                     f"{a.train_s:.0f} + {a.eval_s:.0f} / {b.train_s:.0f} + {b.eval_s:.0f} |")
    if summary:
        lo, hi = summary["bootstrap_ci"]
        tlo, thi = summary["t_ci_over_seeds"]
        w = summary["worst_seed"]
        lines += ["", f"Mean accuracy difference (0 − 0.05): {summary['mean_difference']:+.4f}; 95 % CI "
                  f"[{lo:+.4f}, {hi:+.4f}] (paired bootstrap over validation examples, {summary['bootstrap_resamples']}"
                  f" resamples, seeds pooled); t interval over seeds [{tlo:+.4f}, {thi:+.4f}].",
                  f"Worst seed for dropout 0: seed {w['seed']}, {w['difference']:+.4f}. "
                  f"Mean macro-F1 difference: {summary['mean_macro_f1_difference']:+.4f}."]
    return "\n".join(lines)


def write(args: argparse.Namespace, data: PreparedData, results: list[RunResult], summary: dict, wall_s: float
          ) -> None:
    command = "python -m bench.lora_dropout_quality " + shlex.join(sys.argv[1:])
    setup = (f"Banking77 train.csv, data seed {args.data_seed}: {len(data.train)} training rows "
             f"({args.train_per_class} a class), {len(data.test)} validation rows ({args.val_per_class} a class "
             f"before de-leaking); embedded SmolLM2-135M-Instruct, LoRA r 16 / alpha 32 / all-linear, {args.epochs} "
             f"epochs, lr {args.lr}, batch {args.batch_size}; classification_mode {args.mode}; CPU, "
             f"{wall_s / 60:.1f} min wall in all.")
    (args.out / "lora_dropout_quality.md").write_text(
        f"`{command}`\n\n# LoRA dropout 0 vs 0.05 on Banking77 validation\n\n{setup}\n\n"
        f"{table(results, args.seeds, summary)}\n", encoding="utf-8")
    payload = {"command": command, "setup": setup, "summary": summary,
               "validation": [{"text": r.input_text, "label": r.label, "line": r.meta["line"]} for r in data.test],
               "runs": [asdict(r) for r in results]}
    (args.out / "lora_dropout_quality.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77" / "train.csv")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="training seeds")
    ap.add_argument("--data-seed", type=int, default=0, help="draws the rows once for every run")
    ap.add_argument("--train-per-class", type=int, default=6)
    ap.add_argument("--val-per-class", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--mode", choices=["score", "generate"], default="generate", help="eval.classification_mode")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the .md and .json")
    args = ap.parse_args()
    if not args.data.is_file():
        ap.error(f"--data {args.data}: file not found")
    start = time.perf_counter()
    data = draw(args.data, args.train_per_class, args.val_per_class, args.data_seed)
    base = resolve_model(EMBEDDED_MODEL)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="dropq-") as tmp:
        for seed in args.seeds:
            for dropout in DROPOUTS:
                results.append(run_one(args, data, base, seed, dropout, Path(tmp)))
                r = results[-1]
                print(f"seed {seed} dropout {dropout}: accuracy {r.accuracy:.3f}, macro-F1 {r.macro_f1:.3f}, "
                      f"invalid {r.invalid_rate:.3f}, "
                      f"train {r.train_s:.0f} s, eval {r.eval_s:.0f} s", flush=True)
    summary = summarize(results, args.seeds)
    print(table(results, args.seeds, summary))
    args.out.mkdir(parents=True, exist_ok=True)
    write(args, data, results, summary, time.perf_counter() - start)


if __name__ == "__main__":
    main()
