"""`tunewise soup`: a thin shell over `tunewise.soup.make_soup`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tunewise.cli.common import console
from tunewise.config import load_config, parse_overrides


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def soup_cmd(config: Path = typer.Argument(..., help="YAML run config: its validation split scores the ingredients"),
             ingredients: list[Path] = typer.Argument(..., help="fine-tuned model, adapter or run folders"),
             out: Path | None = typer.Option(None, "--out", help="where the soup goes (default: runs/<name>/model)"),
             greedy: bool = typer.Option(False, "--greedy", help="greedy soup: keep an ingredient only if the "
                                         "validation score does not drop (default: uniform mean)"),
             force: bool = typer.Option(False, "--force", help="replace a non-empty --out"),
             set_: list[str] = typer.Option([], "--set", help="override a key: --set name=banking77-soup")) -> None:
    """Average fine-tuned models of one recipe into one model of the same size (a model soup)."""
    from tunewise.pipeline import RunFolder, stage_data, stage_model  # heavy
    from tunewise.soup import make_soup

    cfg = load_config(config, parse_overrides(set_))
    run = RunFolder(cfg)
    data, base = stage_data(cfg, run), stage_model(cfg, run)
    with run.stage("soup"):
        result = make_soup(cfg, data, base, ingredients, out or run.path / "model", greedy, force)
        run.manifest["soup"] = {k: v for k, v in result.to_json().items() if k != "ingredients"}
    table = Table(title=f"{result.method} soup: validation {result.metric} ({result.val_examples} examples)")
    greedy = result.method == "greedy"
    cols = ["ingredient", "kind", f"val {result.metric}", *(["soup with it"] if greedy else []), "kept"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("ingredient", "kind") else "right")
    for item in result.ingredients:
        table.add_row(item.path, item.kind, _score(item.val_score),
                      *([_score(item.soup_val_score)] if greedy else []), "yes" if item.kept else "no")
    console.print(table)
    console.print(f"soup of {len(result.kept)}/{len(result.ingredients)}: val {result.metric} "
                  f"{_score(result.val_score)} ({result.seconds:.0f} s) → {result.out}", highlight=False)
