"""Human review: side-by-side test examples (input, reference, every system's answer, correct?) as CSV and
HTML, wrong answers of the fine-tuned model first. Read from predictions.jsonl, so it needs no model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from tunewise.errors import ConfigError


def _focus(systems: list[str]) -> str:
    return "fine_tuned" if "fine_tuned" in systems else systems[-1]


def review_rows(run_dir: Path, n: int) -> tuple[list[str], list[dict]]:
    """(systems, the n rows to review): the focus system's wrong answers first, lowest score first, then
    the examples most systems got wrong; ties keep test-set order."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no predictions.jsonl (run `tunewise eval` first)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        return [], []
    systems = list(rows[0]["outputs"])
    focus = _focus(systems)

    def key(item: tuple[int, dict]):
        i, r = item
        score = r.get("score", {}).get(focus, float(r["correct"][focus]))
        return (r["correct"][focus], score, sum(r["correct"].values()), i)

    ordered = [r for _, r in sorted(enumerate(rows), key=key)]
    return systems, ordered[:n]


def export_review(run_dir: Path, n: int) -> tuple[Path, Path]:
    """Write review.csv and review.html into the run folder."""
    run_dir = Path(run_dir)
    systems, rows = review_rows(run_dir, n)
    csv_path, html_path = run_dir / "review.csv", run_dir / "review.html"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["input", "reference", *[c for s in systems for c in (s, f"{s} correct", f"{s} score")]])
        for r in rows:
            w.writerow([r["input"], " | ".join(r.get("references") or [r["reference"]]),
                        *[c for s in systems for c in (r["outputs"][s], r["correct"][s], r.get("score", {}).get(s))]])
    env = Environment(loader=PackageLoader("tunewise", "report/templates"), autoescape=select_autoescape())
    html = env.get_template("review.html.j2").render(name=run_dir.name, systems=systems, rows=rows)
    html_path.write_text(html, encoding="utf-8")
    return csv_path, html_path
