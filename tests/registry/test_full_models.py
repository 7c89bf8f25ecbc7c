"""Runs whose weights are a full model (full fine-tuning, soups) go through the operate loop like adapters:
registered, promoted, served, exported and rolled back."""

import json

import pytest
import torch
from typer.testing import CliRunner

from tests.fixtures.runs import fake_run
from tunewise.config import OperateConfig, RegistryConfig, ServeConfig, dump_config
from tunewise.registry import Registry, RegistryError
from tunewise.testing import save_tiny_model, tiny_config

ASK = {"model": "production", "messages": [{"role": "user", "content": "the match team won"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory, tiny_model_dir):
    """A tiny full fine-tune through the pipeline, then a soup of it and a second model, evaluated by the CLI."""
    from tunewise.cli import app
    from tunewise.pipeline import run

    tmp = tmp_path_factory.mktemp("full")
    cfg = tiny_config(tmp, tiny_model_dir, classification_mode="score", few_shot_k=0, classical=False,
                      forgetting={"enabled": False})
    cfg = cfg.model_copy(update={"name": "tiny-full", "train": cfg.train.model_copy(
        update={"method": "full", "learning_rate": 1e-3})})
    run(cfg)
    path = tmp / "cfg.yaml"
    dump_config(cfg, path)
    other = save_tiny_model(tmp / "other", seed=1)
    cli = CliRunner()
    soup = cli.invoke(app, ["soup", str(path), str(cfg.run_dir), str(other), "--set", "name=tiny-soup"])
    assert soup.exit_code == 0, soup.output
    evaluated = cli.invoke(app, ["eval", str(path), "--set", "name=tiny-soup"])
    assert evaluated.exit_code == 0, evaluated.output
    return cfg.run_dir, cfg.output_dir / "tiny-soup"


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_a_full_fine_tune_and_a_soup_are_registered_promoted_served_and_rolled_back(full_runs, tmp_path):
    from fastapi.testclient import TestClient

    from tunewise.serve import create_app
    from tunewise.serve.auth import create_key

    full_dir, soup_dir = full_runs
    assert not (full_dir / "adapter").exists() and (full_dir / "model" / "model.safetensors").is_file()
    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    full = reg.register_run(full_dir)
    assert full.kind == "full" and full.artifact_path.name == "model"
    assert (full.artifact_path / "model.safetensors").is_file()
    reg.promote(full.ref)
    soup = reg.register_run(soup_dir)
    assert soup.kind == "full" and soup.test_set_hash == full.test_set_hash  # the same frozen test set
    reg.promote(soup.ref, force=True, reason="test: the soup replaces the fine-tune")

    client = TestClient(create_app(OperateConfig(registry=reg.cfg, serve=ServeConfig(max_tokens=4)), reg))
    client.headers["Authorization"] = "Bearer " + create_key(reg.engine, "tests")
    served = client.post("/v1/chat/completions", json=ASK)
    assert served.status_code == 200, served.text
    assert served.json()["model"] == "tiny-soup:v1" and served.json()["usage"]["completion_tokens"] >= 1
    direct = client.post("/v1/chat/completions", json={**ASK, "model": "tiny-full:v1"})
    assert direct.status_code == 200 and direct.json()["model"] == "tiny-full:v1"

    reg.rollback(reason="test")
    assert reg.model("production").ref == "tiny-full:v1"
    assert client.post("/v1/chat/completions", json=ASK).json()["model"] == "tiny-full:v1"


def test_a_full_fine_tune_is_served_with_its_own_weights(full_runs, tmp_path, tiny_model_dir):
    from tunewise.config import TaskConfig
    from tunewise.models import load_model
    from tunewise.serve.engine import ModelPool

    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    rec = reg.register_run(full_runs[0])
    pool = ModelPool()
    served = pool.prepare(rec, TaskConfig(instruction="classify the text"), ["business", "politics", "sport"])
    model = pool.bases[served.base_key][0]
    ids = [5, 9, 17, 30]
    assert torch.allclose(logits(model, ids), logits(load_model(full_runs[0] / "model", "cpu"), ids))
    assert not torch.allclose(logits(model, ids), logits(load_model(tiny_model_dir, "cpu"), ids), atol=1e-4)
    assert pool.complete(served, ASK["messages"], 3).completion_tokens >= 1


def test_a_full_fine_tune_is_exported_as_its_own_safetensors(full_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunewise.export import export_model
    from tunewise.models import load_model

    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    reg.register_run(full_runs[0])
    res = export_model(reg, "tiny-full", tmp_path / "export")
    assert res.model == "tiny-full:v1" and (res.merged_dir / "model.safetensors").is_file()
    assert not list(res.merged_dir.glob("*.bin")) and (res.merged_dir / "tokenizer.json").is_file()
    exported = AutoModelForCausalLM.from_pretrained(res.merged_dir, use_safetensors=True)
    ids = [5, 9, 17, 30]
    assert torch.allclose(logits(exported, ids), logits(load_model(full_runs[0] / "model", "cpu"), ids), atol=1e-6)


def test_pickled_weights_are_refused_at_registration(tmp_path, tiny_model_dir):
    run = fake_run(tmp_path, "pickled", [True] * 40)
    (run / "adapter" / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(RegistryError, match=r"adapter: only adapter_model.bin; .*safetensors only"):
        Registry(RegistryConfig(workspace=tmp_path / "ws")).register_run(run)


def test_a_run_without_weights_is_refused(tmp_path):
    run = fake_run(tmp_path, "empty", [True] * 40)
    (run / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(RegistryError, match="no adapter/adapter_config.json or model/config.json"):
        Registry(RegistryConfig(workspace=tmp_path / "ws")).register_run(run)
    assert json.loads((run / "manifest.json").read_text())["name"] == "empty"
