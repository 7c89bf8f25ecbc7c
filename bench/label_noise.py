"""Label-error detection on Banking77 with planted noise: a share of the training labels (default 5 %) is
flipped at random (seeded) to another label, `tunewise.data.label_issues.detect` runs on the rows, and the
flagged rows are scored against the flipped set (precision, recall) with the time taken. Beside it, on the same
out-of-fold probabilities, cleanlab's default filter (`find_label_issues`, filter_by='prune_by_noise_rate').

    python -m bench.label_noise [--data ../shared/data/banking77/train.csv] [--seeds 0 1 2] [--rate 0.05]

Run from the repo root. CPU only; ~1 CPU-minute a seed on the 10,003 Banking77 training rows."""

from __future__ import annotations

import argparse
import csv
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues

from tunewise.data.label_issues import MAX_FOLDS, detect, out_of_fold_probabilities, text_features
from tunewise.data.records import Record, classification_record

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Score:
    flagged: int
    precision: float
    recall: float


@dataclass
class SeedResult:
    seed: int
    rows: int
    flipped: int
    tunewise: Score
    cleanlab_default: Score
    wall_s: float
    cpu_s: float


def load(path: Path) -> tuple[list[str], list[str]]:
    """Texts and labels of a text,label CSV (Banking77: text,category)."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    label = "category" if "category" in rows[0] else "label"
    return [r["text"] for r in rows], [r[label] for r in rows]


def flip(labels: list[str], rate: float, seed: int) -> tuple[list[str], set[int]]:
    """`rate` of the labels replaced by another label drawn uniformly; returns the noisy labels and their rows."""
    rnd = random.Random(seed)
    names = sorted(set(labels))
    chosen = set(rnd.sample(range(len(labels)), round(rate * len(labels))))
    noisy = [rnd.choice([n for n in names if n != y]) if i in chosen else y for i, y in enumerate(labels)]
    return noisy, chosen


def score(flagged: set[int], flipped: set[int]) -> Score:
    hit = len(flagged & flipped)
    return Score(flagged=len(flagged), precision=hit / len(flagged) if flagged else 0.0,
                 recall=hit / len(flipped) if flipped else 0.0)


def run_seed(path: Path, texts: list[str], labels: list[str], rate: float, seed: int) -> SeedResult:
    noisy, flipped = flip(labels, rate, seed)
    # CSV line numbers as the data stage records them (line 1 is the header).
    records: list[Record] = [classification_record(t, y, {"source": str(path), "line": i + 2})
                             for i, (t, y) in enumerate(zip(texts, noisy))]
    names = sorted(set(noisy))
    encoded = np.array([names.index(y) for y in noisy])
    wall, cpu = time.perf_counter(), time.process_time()
    probs = out_of_fold_probabilities(text_features(texts), encoded, MAX_FOLDS, seed)
    found = detect(records, "report", "training rows", seed, probs=probs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    plain = set(np.flatnonzero(find_label_issues(encoded, probs, n_jobs=1)).tolist())
    return SeedResult(seed=seed, rows=len(texts), flipped=len(flipped),
                      tunewise=score({i.index for i in found.issues}, flipped),
                      cleanlab_default=score(plain, flipped), wall_s=wall, cpu_s=cpu)


def print_table(results: list[SeedResult]) -> None:
    print(f"{'seed':>4} {'rows':>6} {'flipped':>7} | {'tunewise: flagged':>17} {'precision':>9} {'recall':>6} | "
          f"{'cleanlab default: flagged':>25} {'precision':>9} {'recall':>6} | {'wall s':>6} {'CPU s':>6}")
    for r in results:
        t, c = r.tunewise, r.cleanlab_default
        print(f"{r.seed:>4} {r.rows:>6} {r.flipped:>7} | {t.flagged:>17} {t.precision:>9.3f} {t.recall:>6.3f} | "
              f"{c.flagged:>25} {c.precision:>9.3f} {c.recall:>6.3f} | {r.wall_s:>6.1f} {r.cpu_s:>6.1f}")
    for name in ("tunewise", "cleanlab_default"):
        p = [getattr(r, name).precision for r in results]
        rc = [getattr(r, name).recall for r in results]
        print(f"{name}: precision {min(p):.3f}–{max(p):.3f} (worst {min(p):.3f}), "
              f"recall {min(rc):.3f}–{max(rc):.3f} (worst {min(rc):.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77" / "train.csv")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rate", type=float, default=0.05, help="share of labels flipped")
    args = ap.parse_args()
    texts, labels = load(args.data)
    results = []
    for seed in args.seeds:
        results.append(run_seed(args.data, texts, labels, args.rate, seed))
        print_table(results[-1:])
    print()
    print_table(results)


if __name__ == "__main__":
    main()
