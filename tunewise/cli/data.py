"""`tunewise data check | clean | split`: one set of data options, three depths of preparation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tunewise.cli.common import console, err_console
from tunewise.config import RunConfig, load_config, parse_config

# The options every data command takes, defined once.
Paths = Annotated[list[Path], typer.Argument(help="data files (JSONL, JSON, CSV/TSV, Parquet), or one YAML run config")]
Out = Annotated[Path, typer.Option("--out", help="folder for card.json, card.html, quarantine.jsonl")]
Task = Annotated[str | None, typer.Option("--task", help="classification | generation (default: classification)")]
Model = Annotated[str | None, typer.Option("--model", help="model whose tokenizer measures lengths (default: the "
                                                           "config's)")]
Format = Annotated[str | None, typer.Option("--format", help="auto|chat|alpaca|prompt_completion|sharegpt|text_label")]
Pii = Annotated[str | None, typer.Option("--pii", help="report | redact | drop (default redact)")]
Labels = Annotated[str | None, typer.Option("--labels", help="declared label set, comma-separated (others are "
                                                             "quarantined)")]
TextField = Annotated[str | None, typer.Option("--text-field", help="column holding the text")]
LabelField = Annotated[str | None, typer.Option("--label-field", help="column holding the label")]
Slices = Annotated[list[str] | None, typer.Option("--slice", help="metadata column to audit the label mix within "
                                                                  "(repeatable)")]
Threshold = Annotated[float | None, typer.Option("--dedup-threshold", help="Jaccard similarity of near duplicates "
                                                                           "(0.8)")]
Strict = Annotated[bool, typer.Option("--strict", help="exit 1 when any row is quarantined")]
DEFAULT_OUT = Path("data-check")


def data_config(paths: list[Path], **opts) -> RunConfig:
    """A run config from a YAML file (a single .yaml path) or from data files plus the command's options."""
    if len(paths) == 1 and paths[0].suffix in (".yaml", ".yml"):
        raw = load_config(paths[0]).model_dump(mode="json")
    else:
        raw = {"data": {"paths": [str(p) for p in paths]}}
    data, task = raw.setdefault("data", {}), raw.setdefault("task", {})
    for key in ("format", "pii", "text_field", "label_field"):
        if opts.get(key) is not None:
            data[key] = opts[key]
    if opts.get("slices"):
        data["slice_columns"] = opts["slices"]
    if opts.get("threshold") is not None:
        data.setdefault("dedup", {})["threshold"] = opts["threshold"]
    if opts.get("task"):
        task["type"] = opts["task"]
    if opts.get("labels"):
        task["labels"] = [x.strip() for x in opts["labels"].split(",") if x.strip()]
    if opts.get("model"):
        raw.setdefault("model", {})["base"] = opts["model"]
    return parse_config(raw, "command line")


def print_card(card, out: Path) -> None:
    c = card.counts
    console.print(f"[bold]{c['rows_read']}[/] rows read · [bold]{c['usable']}[/] usable · "
                  f"{c['quarantined']} quarantined · {c['duplicates_removed']} duplicates removed · "
                  f"hash {card.content_hash[:12]}")
    table = Table(title="quarantine reasons", show_header=False) if card.quarantine["by_reason"] else None
    for reason, n in (card.quarantine["by_reason"] or {}).items():
        table.add_row(reason, str(n))
    if table:
        console.print(table)
    if card.pii["occurrences"]:
        found = ", ".join(f"{k} {n}" for k, n in card.pii["occurrences"].items())
        console.print(f"PII ({card.pii['policy']}): {found}")
    for w in card.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"card: {out / 'card.html'}  ·  quarantine: {out / 'quarantine.jsonl'}")


def _strict_exit(card, strict: bool) -> None:
    if strict and card.counts["quarantined"]:
        err_console.print(f"[bold red]error:[/] --strict: {card.counts['quarantined']} rows quarantined")
        raise typer.Exit(1)


def data_check(paths: Paths, out: Out = DEFAULT_OUT, task: Task = None, model: Model = None, format: Format = None,
               pii: Pii = None, labels: Labels = None, text_field: TextField = None, label_field: LabelField = None,
               slices: Slices = None, threshold: Threshold = None, strict: Strict = False) -> None:
    """Read, validate and audit the data; write the card and the quarantine. Exit 1 when no usable row."""
    from tunewise.data import check  # heavy

    cfg = data_config(paths, task=task, model=model, format=format, pii=pii, labels=labels, slices=slices,
                      text_field=text_field, label_field=label_field, threshold=threshold)
    card = check(cfg, out)
    print_card(card, out)
    _strict_exit(card, strict)


def data_clean(paths: Paths, out: Out = DEFAULT_OUT, task: Task = None, model: Model = None, format: Format = None,
               pii: Pii = None, labels: Labels = None, text_field: TextField = None, label_field: LabelField = None,
               slices: Slices = None, threshold: Threshold = None, strict: Strict = False) -> None:
    """Check, then write the cleaned, deduplicated, redacted rows as canonical JSONL (out/clean.jsonl)."""
    from tunewise.data import check  # heavy

    cfg = data_config(paths, task=task, model=model, format=format, pii=pii, labels=labels, slices=slices,
                      text_field=text_field, label_field=label_field, threshold=threshold)
    card = check(cfg, out, out / "clean.jsonl")
    print_card(card, out)
    _strict_exit(card, strict)
    console.print(f"clean data: {out / 'clean.jsonl'} ({card.counts['usable']} rows)")


def data_split(paths: Paths, out: Out = DEFAULT_OUT, task: Task = None, model: Model = None, format: Format = None,
               pii: Pii = None, labels: Labels = None, text_field: TextField = None, label_field: LabelField = None,
               slices: Slices = None, threshold: Threshold = None,
               group: Annotated[str | None, typer.Option("--group", help="column whose rows stay in one split")] = None,
               val: Annotated[float | None, typer.Option(
                   "--val", help="fraction (<1) or count of validation rows (0.1)")] = None,
               test: Annotated[float | None, typer.Option(
                   "--test", help="fraction (<1) or count of test rows (0.1)")] = None,
               seed: Annotated[int | None, typer.Option("--seed")] = None, strict: Strict = False) -> None:
    """Check and clean, then write train/val/test JSONL with a leakage report (out/leakage.json)."""
    from tunewise.data import prepare  # heavy

    raw = data_config(paths, task=task, model=model, format=format, pii=pii, labels=labels, slices=slices,
                      text_field=text_field, label_field=label_field, threshold=threshold
                      ).model_dump(mode="json")
    if seed is not None:
        raw["seed"] = seed
    for key, value in (("val", val), ("test", test)):  # unset: the config's split, else the defaults
        if value is not None:
            raw["data"].setdefault("split", {})[key] = int(value) if value >= 1 else value
    if group:
        raw["data"]["group_column"] = group
    data = prepare(parse_config(raw, "command line"))
    data.write(out)
    print_card(data.card, out)
    lk = data.card.leakage
    console.print(f"train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)} → {out} · leakage "
                  f"removed: val {lk['removed']['val']}, test {lk['removed']['test']} ({out / 'leakage.json'})")
    _strict_exit(data.card, strict)
