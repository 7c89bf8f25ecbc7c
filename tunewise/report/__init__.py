"""Report stage: one self-contained HTML file from what the run folder holds.
Entry point: `write_report(run_dir) -> Path`. It reads files only, so `tunewise report` can redo it later."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from tunewise.report.plots import loss_curve

TITLES = {"zero_shot": "zero-shot (base model)", "few_shot": "few-shot (base model, k={k})",
          "fine_tuned": "fine-tuned (LoRA)"}
HEADLINE = {"classification": ["accuracy", "macro_f1"], "generation": ["rouge_l", "bleu"]}


def system_title(name: str, info: dict) -> str:
    return TITLES.get(name, name).format(k=info.get("k", "?"))


def _samples(run_dir: Path, systems: list[str], n: int) -> list[dict]:
    path = run_dir / "predictions.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return [{"input": r["input"], "reference": r["reference"],
             "outputs": [{"text": r["outputs"].get(s, ""), "correct": r["correct"].get(s, False)} for s in systems]}
            for r in rows]


def write_report(run_dir: Path, n_samples: int = 10) -> Path:
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train = json.loads((run_dir / "train_result.json").read_text()) if (run_dir / "train_result.json").is_file() \
        else None
    task = manifest["task"]
    names = list(metrics["test"])
    headline = HEADLINE[task]
    inference = metrics.get("inference", {})
    best = max(names, key=lambda s: metrics["test"][s].get(headline[0], 0))
    titles = {s: system_title(s, inference.get(s, {})) for s in names}
    rows = [{"title": titles[s], "metrics": metrics["test"][s],
             "prompt_tokens": inference.get(s, {}).get("prompt_tokens_per_request", 0), "best": s == best}
            for s in names]
    env = Environment(loader=PackageLoader("tunewise", "report/templates"), autoescape=select_autoescape())
    html = env.get_template("report.html.j2").render(
        name=manifest["name"], task=task, base_model=manifest["base_model"]["id"],
        dataset_hash=manifest["dataset"]["content_hash"], seed=manifest["seed"],
        counts=manifest["dataset"]["counts"], metric_names=headline, rows=rows,
        verdict=metrics.get("verdict"), train=train,
        loss_plot=loss_curve(train["train_loss"], train["val_loss"]) if train else None,
        sample_systems=[titles[s] for s in names],
        samples=_samples(run_dir, names, n_samples),
    )
    out = run_dir / "report.html"
    out.write_text(html, encoding="utf-8")
    return out
