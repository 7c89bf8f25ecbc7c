"""PII detector accuracy and speed.

    python -m bench.pii_accuracy [--cases tests/data/pii_cases.jsonl] [--data ../shared/data/banking77]
                                 [--engine builtin|presidio] [--rows 50000] [--show-errors]

Accuracy: tests/data/pii_cases.jsonl (written by `python -m tests.data.make_pii_cases`): recall per kind (a
planted value counts when a hit of its kind covers it whole), precision per kind (hits that overlap a planted
value of their kind), and the share of hard negatives with no hit at all. Speed: Banking77 texts (train +
test, repeated to --rows) through `PiiDetector.find`, in one process and in 2 forked processes (the data pass
uses min(2, CPUs) workers), as is and with 5 % of rows carrying a case from the set."""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import random
import time
from pathlib import Path

from tunewise.data.pii import PiiDetector, make_detector
from tunewise.data.pii_eval import load_cases, score_cases

ROOT = Path(__file__).resolve().parent.parent
_DETECTOR: PiiDetector | None = None  # the detector the forked workers inherit


def banking_texts(folder: Path, rows: int) -> list[str]:
    texts = []
    for name in ("train.csv", "test.csv"):
        with (folder / name).open(encoding="utf-8") as fh:
            texts += [row["text"] for row in csv.DictReader(fh)]
    return [texts[i % len(texts)] for i in range(rows)]


def _find_all(texts: list[str]) -> int:
    return sum(len(_DETECTOR.find(t)) for t in texts)


def throughput(detector: PiiDetector, texts: list[str], workers: int) -> tuple[float, float, int]:
    """(rows per wall second, rows per CPU second of all processes, hits)."""
    global _DETECTOR
    _DETECTOR = detector
    cpu0, wall0 = os.times(), time.perf_counter()
    if workers == 1:
        hits = _find_all(texts)
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            hits = sum(pool.map(_find_all, [texts[i:i + 2000] for i in range(0, len(texts), 2000)]))
    wall, cpu1 = time.perf_counter() - wall0, os.times()
    cpu = sum(cpu1[:4]) - sum(cpu0[:4])  # user + system of this process and its waited-for children
    return len(texts) / wall, len(texts) / cpu, hits


def accuracy_table(cases_path: Path, engine: str, show_errors: bool) -> None:
    scores = score_cases(load_cases(cases_path), engine)
    print(f"## Accuracy ({cases_path.name}, engine {engine})\n")
    print("| kind | planted | recall | hits | precision |\n|---|---:|---:|---:|---:|")
    for kind in sorted(set(scores.planted) | set(scores.hits)):
        print(f"| {kind} | {scores.planted[kind]} | {scores.recall(kind):.3f} | {scores.hits[kind]} | "
              f"{scores.precision(kind):.3f} |")
    print(f"| **all** | {sum(scores.planted.values())} | {scores.recall():.3f} | {sum(scores.hits.values())} | "
          f"{sum(scores.true_hits.values()) / max(1, sum(scores.hits.values())):.3f} |")
    print(f"\nhard negatives with no hit: {scores.clean_negatives}/{scores.negatives} = "
          f"{scores.negative_precision():.3f}; {scores.rows / scores.seconds:,.0f} rows/s on the case set "
          "(every row has a number or a key: the slow path)")
    if show_errors:
        for kind, value, text in scores.missed:
            print(f"missed {kind}: {value!r} in {text!r}")
        for kind, value, text in scores.false_alarms:
            print(f"false {kind}: {value!r} in {text!r}")


def speed_table(data: Path, rows: int, engine: str, cases_path: Path) -> None:
    detector = make_detector(engine, "US")
    plain = banking_texts(data, rows)
    rnd = random.Random(0)
    positives = [c.text for c in load_cases(cases_path) if c.kinds]
    planted = [f"{t} {rnd.choice(positives)}" if rnd.random() < 0.05 else t for t in plain]
    print(f"\n## Speed (Banking77 texts repeated to {rows:,} rows, engine {engine}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f})\n")
    print("| input | processes | rows/s (wall) | rows/CPU-s | hits |\n|---|---:|---:|---:|---:|")
    for name, texts in (("Banking77 as is", plain), ("Banking77, 5 % rows + a PII case", planted)):
        for workers in (1, 2):
            wall, cpu, hits = throughput(detector, texts, workers)
            print(f"| {name} | {workers} | {wall:,.0f} | {cpu:,.0f} | {hits:,} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=ROOT / "tests" / "data" / "pii_cases.jsonl")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--engine", choices=["builtin", "presidio"], default="builtin")
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()
    accuracy_table(args.cases, args.engine, args.show_errors)
    speed_table(args.data, args.rows, args.engine, args.cases)


if __name__ == "__main__":
    main()
