"""Report stage: one self-contained HTML file (no network: plots are inline PNGs) from what the run folder
holds. Entry point: `write_report(run_dir) -> Path`. It reads files only, so `tunewise report` can redo it
later; `export_review(run_dir, n)` writes the human-review CSV and HTML."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from tunewise.errors import ConfigError
from tunewise.report import plots
from tunewise.report.review import export_review, review_rows

__all__ = ["HEADLINE", "export_review", "system_title", "write_report"]

TITLES = {"zero_shot": "zero-shot (base model)", "few_shot": "few-shot (base model, k={k}, {selection})",
          "classical": "TF-IDF + logistic regression", "fine_tuned": "fine-tuned ({method})"}
HEADLINE = {"classification": ["accuracy", "macro_f1"], "generation": ["rouge_l", "bleu"],
            "extraction": ["json_f1", "json_valid"]}
PLOTTED = {"classification": ["accuracy", "macro_f1", "micro_f1"],
           "generation": ["rouge_l", "bleu", "chrf", "slot_error_rate"],
           "extraction": ["json_f1", "json_valid", "json_schema_valid"]}
ORDER = {"classification": ["accuracy", "macro_f1", "micro_f1", "invalid_rate"],
         "generation": ["rouge1", "rouge2", "rouge_l", "bleu", "chrf", "exact_match", "slot_error_rate", "perplexity"],
         "extraction": ["json_valid", "json_precision", "json_recall", "json_f1", "json_exact_match",
                        "json_schema_valid", "perplexity"]}


def system_title(name: str, info: dict) -> str:
    if name == "classical" and "retrieval" in info.get("model", ""):
        return "TF-IDF nearest-neighbour retrieval"
    return TITLES.get(name, name).format(k=info.get("k", "?"), selection=info.get("selection", "random"),
                                         method=info.get("method", "adapter"))


def _columns(task: str, test: dict[str, dict[str, float]]) -> list[str]:
    """The task's metrics in their usual order, then any other (user metrics), as far as a system has them."""
    present = {m for values in test.values() for m in values}
    known = [m for m in ORDER[task] if m in present]
    return known + sorted(present - set(known))


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except ValueError:
        return None  # a half-written side file must not stop the report; the section is just left out


def _short(value, limit: int = 240) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {_short(v, 60)}" for k, v in value.items() if not isinstance(v, (dict, list)))
        nested = [k for k, v in value.items() if isinstance(v, (dict, list))]
        text += (" · " if text and nested else "") + (f"also {', '.join(nested)}" if nested else "")
    elif isinstance(value, list):
        text = "; ".join(_short(v, 120) for v in value[:5]) + (f" (+{len(value) - 5} more)" if len(value) > 5 else "")
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _card_summary(card: dict | None) -> list[tuple[str, str]]:
    """The data card's top-level facts as (key, short text) rows. The card's schema belongs to the data stage,
    so the report shows what is there (scalars of each section, the first warnings) instead of assuming it;
    the full card is data/card.html."""
    if not card:
        return []
    return [(key, _short(value)) for key, value in card.items() if value not in (None, {}, [])]


def _training_cost(run_dir: Path, manifest: dict, train: dict | None, metrics: dict) -> dict | None:
    """The estimate made before training (if the training stage wrote one) beside what training took."""
    estimate = ((train or {}).get("estimate") or (manifest.get("train") or {}).get("estimate")
                or _json(run_dir / "estimate.json"))
    if not train and not estimate:
        return None
    price = metrics.get("inference", {}).get("fine_tuned", {}).get("price_per_hour")
    actual_hours = train["seconds"] / 3600 if train else None
    return {"estimate": estimate, "actual_hours": actual_hours,
            "actual_usd": actual_hours * price if actual_hours is not None and price is not None else None,
            "device": metrics.get("inference", {}).get("fine_tuned", {}).get("device")}


def _result_rows(metrics: dict, names: list[str], titles: dict[str, str], columns: list[str], best: str) -> list:
    rows = []
    for s in names:
        cells = []
        for m in columns:
            v = metrics["test"][s].get(m)
            lo, hi = metrics.get("ci", {}).get(s, {}).get(m, [None, None])
            cells.append({"value": v, "lo": lo, "hi": hi})
        rows.append({"name": s, "title": titles[s], "cells": cells, "best": s == best,
                     "inference": metrics.get("inference", {}).get(s, {})})
    return rows


def _plots(task: str, metrics: dict, names: list[str], titles: dict[str, str], train: dict | None) -> dict:
    present = {m for values in metrics["test"].values() for m in values}
    out = {"bars": plots.metric_bars(metrics["test"], metrics.get("ci", {}),
                                     [m for m in PLOTTED[task] if m in present], titles),
           "cost": plots.cost_bars(metrics.get("inference", {}), titles) if metrics.get("inference") else None,
           "loss": plots.loss_curve(train["train_loss"], train["val_loss"]) if train else None,
           "confusion": [], "forgetting": None}
    if metrics.get("confusion"):
        best = (metrics.get("verdict") or {}).get("best_baseline")
        for s in [n for n in ("fine_tuned", best) if n in metrics["confusion"]]:
            out["confusion"].append(plots.confusion_plot(metrics["confusion"][s], titles[s]))
    if metrics.get("forgetting"):
        out["forgetting"] = plots.forgetting_plot(metrics["forgetting"])
    return out


def write_report(run_dir: Path, n_samples: int = 10) -> Path:
    run_dir = Path(run_dir)
    manifest = _json(run_dir / "manifest.json") or {}
    metrics = _json(run_dir / "metrics.json")
    if metrics is None:
        raise ConfigError(f"{run_dir}: no readable metrics.json (run `tunewise eval` first)")
    train = _json(run_dir / "train_result.json")
    task = metrics.get("task") or manifest["task"]
    names = list(metrics["test"])
    inference = metrics.get("inference", {})
    titles = {s: system_title(s, inference.get(s, {})) for s in names}
    columns = _columns(task, metrics["test"])
    best = max(names, key=lambda s: metrics["test"][s].get(HEADLINE[task][0], 0))
    systems, samples = review_rows(run_dir, n_samples) if (run_dir / "predictions.jsonl").is_file() else ([], [])
    env = Environment(loader=PackageLoader("tunewise", "report/templates"), autoescape=select_autoescape())
    html = env.get_template("report.html.j2").render(
        name=manifest.get("name", run_dir.name), task=task, manifest=manifest,
        dataset=manifest.get("dataset", {}), columns=columns,
        rows=_result_rows(metrics, names, titles, columns, best), titles=titles, metrics=metrics,
        verdict=metrics.get("verdict"), train=train, card=_card_summary(_json(run_dir / "data" / "card.json")),
        card_html=(run_dir / "data" / "card.html").is_file(),
        training_cost=_training_cost(run_dir, manifest, train, metrics), plots=_plots(task, metrics, names, titles,
                                                                                    train),
        per_class=(metrics.get("per_class") or {}).get("fine_tuned"), forgetting=metrics.get("forgetting"),
        comparisons=metrics.get("comparisons", []), systems=systems, samples=samples,
    )
    out = run_dir / "report.html"
    out.write_text(html, encoding="utf-8")
    return out
