"""The data card: card.json (machine-readable, with the content hash that versions the dataset) and a
self-contained card.html (plots inline) for a reviewer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tunewise.data.audit import Audit
from tunewise.data.label_issues import LabelIssues
from tunewise.data.pii import NOT_DETECTED
from tunewise.data.scan import ScanStats
from tunewise.figures import pyplot, to_data_uri


@dataclass
class DataCard:
    content_hash: str
    task: str
    counts: dict
    sources: list
    quarantine: dict
    duplicates: dict
    conflicts: dict
    pii: dict
    labels: dict
    slices: dict
    token_lengths: dict
    warnings: list
    splits: dict = field(default_factory=dict)
    leakage: dict = field(default_factory=dict)
    label_issues: dict = field(default_factory=dict)  # empty: not a classification task, or data.label_issues off

    def to_json(self) -> dict:
        return asdict(self)


def token_summary(stats: ScanStats, framing: int, tokenizer: str | None, context: int | None,
                  max_length: int, why_not: str | None) -> dict:
    if tokenizer is None or not stats.content_tokens:
        return {"tokenizer": tokenizer, "measured": False, "note": why_not or "no rows"}
    lengths = np.frombuffer(stats.content_tokens, dtype=np.uint32).astype(np.int64) + framing
    counts, edges = np.histogram(lengths, bins=min(40, max(1, len(np.unique(lengths)))))
    return {
        "tokenizer": tokenizer, "measured": True, "context": context, "framing_tokens": framing,
        "max_length": max_length, "over_max_length": int((lengths > max_length).sum()),
        "min": int(lengths.min()), "p50": int(np.percentile(lengths, 50)), "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()), "mean": round(float(lengths.mean()), 1),
        "histogram": {"counts": counts.tolist(), "edges": [round(float(e), 1) for e in edges]},
    }


def build_card(stats: ScanStats, audit: Audit, content_hash: str, task: str, pii_policy: str,
               tokens: dict, label_issues: LabelIssues | None = None, pii_engine: str = "builtin",
               pii_region: str = "US") -> DataCard:
    warnings = list(stats.warnings) + list(audit.warnings)
    if label_issues is not None and label_issues.warning():
        warnings.append(label_issues.warning())
    if tokens.get("measured") and tokens["over_max_length"]:
        warnings.append(f"{tokens['over_max_length']} rows are longer than model.max_length "
                        f"({tokens['max_length']} tokens with the prompt framing): training leaves them out")
    if not tokens.get("measured"):
        warnings.append(tokens["note"])
    quarantined = sum(stats.quarantine.values())
    if quarantined:
        warnings.append(f"{quarantined} rows quarantined (reasons on the card, rows in quarantine.jsonl)")
    clusters = stats.clusters.largest(50) if stats.clusters else []
    return DataCard(
        content_hash=content_hash, task=task,
        counts={"rows_read": stats.rows, "quarantined": quarantined, "duplicates_removed": sum(
            stats.duplicates.values()), "usable": stats.kept},
        sources=[asdict(f) for f in stats.files],
        quarantine={"by_reason": dict(stats.quarantine.most_common()), "examples": stats.quarantine_examples},
        duplicates={"exact": stats.duplicates["exact"], "near": stats.duplicates["near"],
                    "clusters": len(stats.clusters or ()), "largest_clusters": [asdict(c) for c in clusters]},
        conflicts={"count": stats.conflict_count, "listed": stats.conflicts},
        pii={"policy": pii_policy, "engine": pii_engine, "region": pii_region,
             "occurrences": dict(stats.pii.most_common()), "rows": dict(stats.pii_rows.most_common()),
             "not_detected": NOT_DETECTED[pii_engine]},
        labels={"counts": audit.label_counts, "tiny_classes": audit.tiny_classes,
                "imbalance_ratio": audit.imbalance_ratio, "recommended_metric": audit.recommended_metric,
                "metric_reason": audit.metric_reason},
        slices=audit.slices, token_lengths=tokens, warnings=warnings,
        label_issues=label_issues.to_card() if label_issues is not None else {},
    )


def _plots(card: DataCard) -> dict[str, str]:
    plt = pyplot()
    out = {}
    counts = card.labels.get("counts") or {}
    if counts:
        items = list(counts.items())[:80]
        fig, ax = plt.subplots(figsize=(7, max(2.0, 0.18 * len(items) + 0.8)))
        ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#1f77b4")
        ax.set_xlabel("rows")
        ax.tick_params(axis="y", labelsize=7 if len(items) > 20 else 9)
        out["labels"] = to_data_uri(fig)
    hist = card.token_lengths.get("histogram")
    if hist:
        fig, ax = plt.subplots(figsize=(7, 3))
        edges = hist["edges"]
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="#2ca02c")
        ax.axvline(card.token_lengths["max_length"], color="#d62728", ls="--", label="model.max_length")
        ax.set_xlabel(f"tokens ({card.token_lengths['tokenizer']}, with prompt framing)")
        ax.set_ylabel("rows")
        ax.legend()
        out["tokens"] = to_data_uri(fig)
    return out


def write_card(card: DataCard, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "card.json", folder / "card.html"
    json_path.write_text(json.dumps(card.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("card.html.j2").render(card=card, plots=_plots(card))
    html_path.write_text(html, encoding="utf-8")
    return json_path, html_path
