"""The whole pipeline on a tiny random model: every artefact a run promises lands in runs/<name>/."""

import json
import random

import pytest

from tunewise.config import parse_config
from tunewise.evaluate.metrics import CLASSIFICATION_METRICS, GENERATION_METRICS
from tunewise.pipeline import run

WORDS = {"sport": "the match team won lost game", "business": "market shares profit bank money account",
         "politics": "election minister vote party"}


@pytest.fixture()
def tiny_dataset(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "train.jsonl"
    with path.open("w") as fh:
        for i in range(60):
            label = list(WORDS)[i % 3]
            words = WORDS[label].split()
            text = " ".join(rng.choice(words) for _ in range(6))
            fh.write(json.dumps({"text": text, "label": label}) + "\n")
        fh.write("{broken json\n")
    return path


def test_run_writes_every_artefact(tmp_path, tiny_model_dir, tiny_dataset):
    cfg = parse_config({
        "name": "tiny", "output_dir": str(tmp_path / "runs"),
        "data": {"paths": [str(tiny_dataset)], "split": {"val": 6, "test": 9}},
        "model": {"base": str(tiny_model_dir), "max_length": 96},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "logging_steps": 1},
        "eval": {"few_shot_k": 3, "batch_size": 4},
    })
    metrics = run(cfg)
    run_dir = cfg.run_dir
    for name in ("config.yaml", "manifest.json", "metrics.json", "report.html", "predictions.jsonl",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "data/quarantine.jsonl"):
        assert (run_dir / name).is_file(), name

    assert set(metrics["test"]) == {"zero_shot", "few_shot", "classical", "fine_tuned"}
    for values in metrics["test"].values():
        assert 0.0 <= values["accuracy"] <= 1.0 and 0.0 <= values["macro_f1"] <= 1.0
    assert json.loads((run_dir / "metrics.json").read_text())["test"] == metrics["test"]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["dataset"]["content_hash"]) == 64
    assert len(manifest["base_model"]["sha256"]) == 64
    assert manifest["seed"] == 42 and manifest["libraries"]["transformers"]
    assert {"data", "baselines", "train", "evaluate", "report"} <= set(manifest["stage_seconds"])
    assert manifest["dataset"]["counts"]["quarantined"] == 1  # the broken line is kept aside, not lost

    # few-shot prompts carry k examples, so they are longer than zero-shot ones
    inf = metrics["inference"]
    assert inf["few_shot"]["prompt_tokens_per_request"] > inf["zero_shot"]["prompt_tokens_per_request"]

    # the adapter loads with plain PEFT
    from peft import PeftModel

    from tunewise.models import load_model

    model = PeftModel.from_pretrained(load_model(tiny_model_dir, "cpu"), run_dir / "adapter")
    assert model.peft_config["default"].r == 16

    html = (run_dir / "report.html").read_text()
    assert "fine-tuned (lora)" in html and 'id="loss-plot"' in html and "data:image/png;base64," in html
    assert html.count("<tr") >= 1 + 3 + 1 + 9  # results header + 3 systems + samples header + up to 10 rows
    train_log = json.loads((run_dir / "train_result.json").read_text())
    assert train_log["val_loss"] and train_log["train_loss"]


@pytest.mark.parametrize("task", ["classification", "generation"])
def test_run_writes_every_systems_metrics_with_cis_and_costs(tiny_runs, task):
    cfg, returned = tiny_runs[task]
    folder = cfg.run_dir
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(returned))
    systems = {"zero_shot", "few_shot", "classical", "fine_tuned"}  # classical: TF-IDF + LR, or retrieval
    assert set(metrics["test"]) == systems
    names = CLASSIFICATION_METRICS if task == "classification" else GENERATION_METRICS
    headline = ("accuracy", "macro_f1") if task == "classification" else ("rouge_l", "bleu")
    for s in systems:
        assert all(isinstance(metrics["test"][s][m], float) for m in headline)
        assert set(metrics["ci"][s]) == set(metrics["test"][s]) and set(metrics["test"][s]) <= set(names)
        assert {"prompt_tokens_per_request", "tokens_per_second", "dollars_per_1k_requests"} <= set(
            metrics["inference"][s])
    verdict = metrics["verdict"]
    card = json.loads((folder / "data" / "card.json").read_text())
    assert verdict["metric"] == (card["labels"]["recommended_metric"] if task == "classification" else "rouge_l")
    decisive = next(c for c in metrics["comparisons"]
                    if c["b"] == verdict["best_baseline"] and c["metric"] == verdict["metric"])
    assert verdict["ship"] == (decisive["ci"][0] > 0 and not metrics["forgetting"]["flagged"])
    assert verdict["text"].endswith("→ ship.") == verdict["ship"]
    assert metrics["forgetting"]["questions"] >= 400
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == (9 if task == "classification" else 6)
    assert set(rows[0]["score"]) == systems and set(rows[0]["correct"]) == systems
    for name in ("report.html", "review.csv", "review.html"):
        assert (folder / name).is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"baselines", "train", "evaluate", "report"} <= set(manifest["stage_seconds"])


def test_per_example_scores_reproduce_the_headline_metric(tiny_runs):
    cfg, metrics = tiny_runs["classification"]
    rows = [json.loads(line) for line in (cfg.run_dir / "predictions.jsonl").read_text().splitlines()]
    for s, values in metrics["test"].items():
        assert sum(r["score"][s] for r in rows) / len(rows) == pytest.approx(values["accuracy"])


def test_tunewise_run_on_an_e2e_shaped_dataset_reports_references_and_slot_errors(tmp_path, tiny_model_dir):
    import yaml
    from typer.testing import CliRunner

    from tunewise.cli import app
    from tunewise.testing import e2e_config

    raw = e2e_config(tmp_path, tiny_model_dir, train={"early_stopping": {"metric": "bleu"}},
                     eval={"metrics": ["tests.metrics.user_metrics:mean_length_ratio"], "review_examples": 5})
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny-e2e"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["test"]) == {"zero_shot", "few_shot", "classical", "fine_tuned"}
    user = "tests.metrics.user_metrics.mean_length_ratio"
    for name, values in metrics["test"].items():
        assert {"bleu", "rouge_l", "chrf", "slot_error_rate", user} <= set(values) == set(metrics["ci"][name])
    # The retrieval baseline answers with training references, which realise every slot of their own MR only.
    assert 0 < metrics["test"]["classical"]["slot_error_rate"] <= 1
    assert {c["metric"] for c in metrics["comparisons"]} == {"rouge_l", "bleu", "slot_error_rate"}
    assert metrics["inference"]["few_shot"]["selection"] == "tfidf"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(len(r["references"]) == 3 for r in rows)  # one row per distinct MR
    assert set(rows[0]["slot_errors"]) == set(metrics["test"])
    train_log = json.loads((folder / "train_log.json").read_text())
    assert any("eval_bleu" in h for h in train_log)
    html = (folder / "report.html").read_text()
    assert 'id="samples"' in html and '<ol class="refs">' in html and "TF-IDF nearest-neighbour retrieval" in html
    assert 'class="missing"' in html or 'class="added"' in html or "all slots realised" in html
    assert "slot_error_rate" in html and user in html
