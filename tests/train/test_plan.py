"""`tunewise estimate` from a config: data tokenised, model read from config.json only; the CLI's --json."""

import json

import pytest
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.models.estimate import read_shape, trainable_params
from tunewise.testing import save_tiny_model

ROWS = [("the team won the match", "sport"), ("the bank profit", "business"), ("the minister vote", "politics"),
        ("a phone with software", "tech")] * 10


def _config(tmp_path, **train):
    model_dir = save_tiny_model(tmp_path / "model")
    with (tmp_path / "data.jsonl").open("w") as fh:
        for text, label in ROWS:
            fh.write(json.dumps({"text": text, "label": label}) + "\n")
    cfg = {"name": "est", "output_dir": str(tmp_path / "runs"), "data": {"paths": ["data.jsonl"]},
           "model": {"base": str(model_dir)}, "train": {"batch_size": 4, **train},
           "estimate": {"device": "L4", "prices": {"L4": 1.0}}}
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path, model_dir


def test_estimate_json_prints_the_four_numbers(tmp_path):
    path, model_dir = _config(tmp_path)
    out = CliRunner().invoke(app, ["estimate", str(path), "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert set(got) == {"peak_memory_gib", "hours", "cost_usd", "trainable_params"}
    # tiny Llama: 2 layers, hidden 32, 4 heads (kv 2, head_dim 8), intermediate 64; r=16 on all 7 linears
    per_layer = 16 * ((32 + 32) + (32 + 16) * 2 + (32 + 32) + (32 + 64) * 2 + (64 + 32))
    assert got["trainable_params"] == 2 * per_layer == trainable_params(read_shape(model_dir), "lora", 16)
    assert got["peak_memory_gib"] > 0 and got["cost_usd"] == round(got["hours"] * 1.0, 2)


def test_estimate_needs_no_weights(tmp_path):
    path, model_dir = _config(tmp_path)
    for f in model_dir.glob("*.safetensors"):
        f.unlink()  # config.json and the tokenizer are all the estimate reads
    out = CliRunner().invoke(app, ["estimate", str(path)])
    assert out.exit_code == 0, out.output
    assert "peak memory" in out.output and "activations" in out.output


def test_train_cli_qlora_on_cpu_is_one_line_exit_2(tmp_path):
    path, _ = _config(tmp_path, method="qlora")
    out = CliRunner().invoke(app, ["train", str(path)])
    assert out.exit_code == 2
    assert "qlora needs a CUDA GPU" in out.output and "Traceback" not in out.output


def test_estimate_shows_the_fast_paths_automatic_plan_beside_plain(tmp_path):
    """On a GPU (the config's L4), for LoRA on a supported model: the plan, its predicted peak and speed against
    plain's; none with train.fast off."""
    from tunewise.config import load_config
    from tunewise.train.plan import estimate_config

    path, _ = _config(tmp_path, gradient_checkpointing=True)
    out = CliRunner().invoke(app, ["estimate", str(path)])
    assert out.exit_code == 0, out.output
    assert "fast path plan" in out.output and "fast path peak memory" in out.output and "x plain" in out.output
    est = estimate_config(load_config(path))
    plan = est.fast_plan
    assert plan["batch_size"] == 4 and plan["layers"] == 2 and plan["why"].startswith("auto plan:")
    assert plan["peak_gib"] <= plan["plain_peak_gib"] or not plan["fits"]
    assert plan["hours"] == pytest.approx(est.hours / plan["speedup"], rel=1e-3)
    cfg = json.loads(path.read_text())
    cfg["train"]["fast"] = False
    path.write_text(json.dumps(cfg))
    assert estimate_config(load_config(path)).fast_plan is None


@pytest.mark.parametrize(("train", "most"), [({}, 2048), ({"fast": {"cuda_graphs": True}}, float("inf")),
                                             ({"fast": {"cuda_graphs": False}}, 0), ({"lora": {"dropout": 0.05}}, 0)])
def test_estimate_plans_with_the_stack_s_graphs_as_training_would_run_them(tmp_path, monkeypatch, train, most):
    """The plan's peak carries the graphs' copy of the adapter gradients (auto_plan) where `tunewise train` would
    replay them: cuda_graphs on, LoRA dropout 0, a llama-family model, one GPU."""
    import importlib

    from tunewise.config import load_config

    plan_module = importlib.import_module("tunewise.train.plan")  # tunewise.train.plan is also a function's name

    seen = {}
    real = plan_module.plan_for

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(plan_module, "plan_for", spy)
    path, _ = _config(tmp_path, gradient_checkpointing=True, **train)
    assert plan_module.estimate_config(load_config(path)).fast_plan is not None
    assert seen["graphs_max_tokens"] == most
