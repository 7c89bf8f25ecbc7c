"""Label and bias audit over the kept rows: balance, tiny classes, conflicting labels, per-slice label
distributions, size. Each finding becomes a warning with its reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tunewise.config import DataConfig
from tunewise.data.scan import ScanStats

IMBALANCE_RATIO = 10  # largest / smallest class above this: accuracy alone will mislead, macro-F1 is the headline
SLICE_TVD = 0.25  # total variation distance between a slice's label mix and the overall mix worth a warning
MIN_SLICE_ROWS = 20  # smaller slices are listed but not judged: their mix is noise


@dataclass
class Audit:
    label_counts: dict = field(default_factory=dict)
    tiny_classes: dict = field(default_factory=dict)
    imbalance_ratio: float | None = None
    recommended_metric: str | None = None  # the verdict's metric (classification): accuracy, or macro_f1 if imbalanced
    metric_reason: str | None = None
    slices: dict = field(default_factory=dict)  # column → [{value, rows, distribution, tvd}]
    warnings: list = field(default_factory=list)


def _distribution(counts: Counter) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def _tvd(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def _slices(stats: ScanStats, overall: dict[str, float]) -> tuple[dict, list[str]]:
    tables, warnings = {}, []
    for col, counts in stats.slices.items():
        by_value: dict[str, Counter] = {}
        for (value, label), n in counts.items():
            by_value.setdefault(value, Counter())[label] += n
        rows = []
        for value, labels in sorted(by_value.items(), key=lambda kv: -sum(kv[1].values())):
            dist = _distribution(labels)
            n = sum(labels.values())
            tvd = _tvd(dist, overall) if overall else None
            rows.append({"value": value, "rows": n, "distribution": {k: round(v, 3) for k, v in dist.items()},
                         "tvd": round(tvd, 3) if tvd is not None else None})
            if tvd is not None and n >= MIN_SLICE_ROWS and tvd > SLICE_TVD:
                top = max(dist, key=dist.get)
                warnings.append(f"slice {col}={value} ({n} rows): label mix differs from the whole set "
                                f"(total variation {tvd:.2f}; {top} is {dist[top]:.0%} here vs "
                                f"{overall.get(top, 0):.0%} overall) — a model may learn {col} as a shortcut")
        tables[col] = rows
    return tables, warnings


def audit(stats: ScanStats, data: DataConfig, classification: bool) -> Audit:
    a = Audit()
    if stats.kept < data.min_rows:
        a.warnings.append(f"only {stats.kept} usable rows (< {data.min_rows}): fine-tuning results will be "
                          "noisy and the test split too small to tell systems apart")
    if classification and stats.labels:
        a.label_counts = dict(stats.labels.most_common())
        a.tiny_classes = {k: v for k, v in a.label_counts.items() if v < data.min_class_examples}
        for label, n in a.tiny_classes.items():
            a.warnings.append(f"class {label!r} has {n} examples (< {data.min_class_examples}): too few to learn "
                              "or to measure; collect more or merge it")
        a.imbalance_ratio = round(max(stats.labels.values()) / min(stats.labels.values()), 2)
        a.recommended_metric, a.metric_reason = "accuracy", f"classes within {IMBALANCE_RATIO}:1 of each other"
        if a.imbalance_ratio > IMBALANCE_RATIO:
            a.recommended_metric = "macro_f1"
            a.metric_reason = f"classes are imbalanced {a.imbalance_ratio:.0f}:1 (above {IMBALANCE_RATIO}:1)"
            a.warnings.append(f"classes are imbalanced {a.imbalance_ratio:.0f}:1 (largest/smallest): "
                              "read macro-F1, not accuracy (the verdict does)")
        if len(stats.labels) == 1:
            a.warnings.append("only one label in the data: nothing to classify")
    if stats.conflict_count:
        a.warnings.append(f"{stats.conflict_count} rows repeat an earlier input with a different label "
                          "(conflicting labels, listed on the card): fix or remove them")
    a.slices, slice_warnings = _slices(stats, _distribution(stats.labels) if classification else {})
    a.warnings += slice_warnings
    return a
