"""The promotion gates: a candidate must beat production on the same frozen test set, and a retrained one also
on held-out feedback corrections (`feedback_gate`).

Per-example scores (1/0 correctness from the evaluation stage's predictions.jsonl) are paired by example key,
then compared with the evaluation stage's one-sided paired bootstrap."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tunewise.errors import DataError
from tunewise.evaluate.compare import paired_bootstrap

SYSTEM = "fine_tuned"


def example_key(text: str, reference: str) -> str:
    return hashlib.sha256(f"{text}\x00{reference}".encode()).hexdigest()[:20]


@dataclass
class TestScores:
    keys: list[str]
    scores: list[float]

    @property
    def test_set_hash(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.keys)).encode()).hexdigest()

    def to_json(self) -> dict:
        return asdict(self)


def read_test_scores(run_dir: Path, system: str = SYSTEM) -> TestScores:
    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: missing (evaluate the run before registering it)")
    keys, scores = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        if system not in row.get("correct", {}):
            raise DataError(f"{path}:{lineno}: correct.{system}: missing (was the fine-tuned model evaluated?)")
        keys.append(example_key(row["input"], row["reference"]))
        scores.append(float(row["correct"][system]))
    if not keys:
        raise DataError(f"{path}: no test examples")
    return TestScores(keys, scores)


def paired(a: TestScores, b: TestScores) -> tuple[list[float], list[float]]:
    """Scores of A and B on the same examples, in one order. Duplicated examples pair in order of appearance."""
    if sorted(a.keys) != sorted(b.keys):
        raise DataError("candidate and production were scored on different test sets; "
                        "evaluate both on the frozen test set (or promote with --force and a reason)")
    pool: dict[str, list[float]] = {}
    for k, s in zip(b.keys, b.scores):
        pool.setdefault(k, []).append(s)
    return list(a.scores), [pool[k].pop(0) for k in a.keys]


@dataclass
class GateResult:
    passed: bool
    difference: float
    ci: list[float]
    p_value: float
    alpha: float
    n: int
    candidate_score: float
    production_score: float

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"candidate {self.candidate_score:.3f} vs production {self.production_score:.3f} on {self.n} "
                f"examples: difference {self.difference:+.3f} (95% CI {self.ci[0]:+.3f}..{self.ci[1]:+.3f}), "
                f"p={self.p_value:.3f} (needs <= {self.alpha})")


def gate(candidate: TestScores, production: TestScores, alpha: float, seed: int = 0) -> GateResult:
    a, b = paired(candidate, production)
    res = paired_bootstrap(a, b, n_resamples=2000, seed=seed)
    passed = res["difference"] > 0 and res["p_value"] <= alpha
    n = len(a)
    return GateResult(passed, res["difference"], res["ci"], res["p_value"], alpha, n, sum(a) / n, sum(b) / n)


@dataclass
class FeedbackGate:
    """The candidate against production on feedback corrections the candidate did not train on (held out)."""

    passed: bool
    n: int  # held-out corrections scored
    trained_on: int  # corrections the candidate trained on (not scored here)
    candidate: float  # share of held-out corrections the candidate answers as corrected
    production: float
    difference: float
    ci: list[float]
    p_value: float
    alpha: float

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"on {self.n} held-out feedback corrections (not trained on; {self.trained_on} were): candidate "
                f"{self.candidate:.3f} vs production {self.production:.3f}, difference {self.difference:+.3f} "
                f"(95% CI {self.ci[0]:+.3f}..{self.ci[1]:+.3f}), p={self.p_value:.3f} (needs <= {self.alpha})")


def feedback_gate(candidate: list[float], production: list[float], trained_on: int, alpha: float,
                  seed: int = 0) -> FeedbackGate:
    """Pass when the candidate beats production on the held-out corrections (one-sided paired bootstrap). Not
    "no worse": production got its corrections wrong, so any model is no worse than it there; a retrain on
    feedback must fix cases like them that it has not seen."""
    res = paired_bootstrap(candidate, production, n_resamples=2000, seed=seed)
    n = len(candidate)
    return FeedbackGate(res["difference"] > 0 and res["p_value"] <= alpha, n, trained_on, sum(candidate) / n,
                        sum(production) / n, res["difference"], res["ci"], res["p_value"], alpha)
