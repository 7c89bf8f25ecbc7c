"""Measure a PII detector on labelled cases (JSONL lines {"text", "kinds", "values", "region"}): recall and
precision per kind at the span level, how many hard negatives stay clean, and rows per second. Used by
tests/data/test_pii.py and bench/pii_accuracy.py; works on any set written in that shape."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.data.pii import PiiDetector, PiiHit, make_detector
from tunewise.errors import DataError


@dataclass
class PiiCase:
    text: str
    kinds: list[str]
    values: list[str]
    region: str = "US"


@dataclass
class PiiScores:
    planted: Counter = field(default_factory=Counter)  # kind → planted values
    covered: Counter = field(default_factory=Counter)  # kind → planted values fully inside a hit of that kind
    hits: Counter = field(default_factory=Counter)  # kind → hits reported
    true_hits: Counter = field(default_factory=Counter)  # kind → hits that overlap a planted value of that kind
    negatives: int = 0
    clean_negatives: int = 0  # negatives with no hit at all
    missed: list = field(default_factory=list)  # (kind, value, text) not covered
    false_alarms: list = field(default_factory=list)  # (kind, found, text)
    seconds: float = 0.0
    rows: int = 0

    def recall(self, kind: str | None = None) -> float:
        kinds = [kind] if kind else list(self.planted)
        planted = sum(self.planted[k] for k in kinds)
        return sum(self.covered[k] for k in kinds) / planted if planted else 1.0

    def precision(self, kind: str) -> float:
        return self.true_hits[kind] / self.hits[kind] if self.hits[kind] else 1.0

    def negative_precision(self) -> float:
        return self.clean_negatives / self.negatives if self.negatives else 1.0


def load_cases(path: Path) -> list[PiiCase]:
    cases = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            cases.append(PiiCase(row["text"], list(row["kinds"]), list(row.get("values", [])),
                                 row.get("region", "US")))
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{n}: not a PII case ({err}); expected {{text, kinds, values, region}}") from err
    return cases


def _planted_spans(case: PiiCase) -> list[tuple[str, int, int]]:
    spans, pos = [], 0
    for kind, value in zip(case.kinds, case.values):
        at = case.text.find(value, pos)
        if at < 0:
            raise DataError(f"planted value {value!r} is not in its text {case.text!r}")
        spans.append((kind, at, at + len(value)))
        pos = at + len(value)
    return spans


def _score(scores: PiiScores, case: PiiCase, hits: list[PiiHit]) -> None:
    planted = _planted_spans(case)
    for kind, start, end in planted:
        scores.planted[kind] += 1
        if any(h.kind == kind and h.start <= start and end <= h.end for h in hits):
            scores.covered[kind] += 1
        else:
            scores.missed.append((kind, case.text[start:end], case.text))
    for h in hits:
        scores.hits[h.kind] += 1
        if any(k == h.kind and s < h.end and h.start < e for k, s, e in planted):
            scores.true_hits[h.kind] += 1
        else:
            scores.false_alarms.append((h.kind, case.text[h.start:h.end], case.text))
    if not case.kinds:
        scores.negatives += 1
        scores.clean_negatives += not hits


def score_cases(cases: list[PiiCase], engine: str = "builtin") -> PiiScores:
    """Run the detector of `engine` (one per region the cases name) on every case and score its hits."""
    detectors: dict[str, PiiDetector] = {}
    scores = PiiScores()
    for case in cases:
        if case.region not in detectors:
            detectors[case.region] = make_detector(engine, case.region)
        start = time.perf_counter()
        hits = detectors[case.region].find(case.text)
        scores.seconds += time.perf_counter() - start
        scores.rows += 1
        _score(scores, case, hits)
    return scores
