"""The operate loop end to end on CPU with the tiny model:
train → register → serve → requests + feedback → monitor flags drift → retrain → gated promote → rollback."""

import json
import random

import yaml
from typer.testing import CliRunner

SUBJECTS = ["movie", "film", "music", "game", "phone"]
GOOD, BAD = ["great", "nice", "happy", "good", "positive"], ["terrible", "awful", "sad", "bad", "negative"]
BANK = ["bank", "money", "account", "transfer", "payment", "refund", "market", "shares", "profit", "card"]


def sentiment_rows() -> list[dict]:
    rows = []
    for s in SUBJECTS:
        for good, bad in zip(GOOD, BAD):
            rows.append({"text": f"i love this {s} , it was very {good}", "label": "positive"})
            rows.append({"text": f"i hate this {s} , it was very {bad}", "label": "negative"})
            rows.append({"text": f"the {s} was {good} and i love it", "label": "positive"})
            rows.append({"text": f"the {s} was {bad} and i hate it", "label": "negative"})
    return rows


def run_config(tmp_path, data, name, lr, epochs) -> dict:
    return {"name": name, "seed": 0, "output_dir": str(tmp_path / "runs"),
            "task": {"instruction": "Classify the text.", "labels": ["negative", "positive"]},
            "data": {"paths": [str(data)], "split": {"val": 10, "test": 24}},
            "model": {"base": None, "max_length": 96},
            "train": {"epochs": epochs, "learning_rate": lr, "batch_size": 8, "warmup_ratio": 0.0,
                      "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
            "eval": {"few_shot_k": 0, "batch_size": 32, "max_new_tokens": 3}}


def test_train_register_serve_monitor_retrain_promote_rollback(tmp_path, tiny_model_dir, monkeypatch):
    from fastapi.testclient import TestClient

    from tunewise.cli import app
    from tunewise.config import MonitorConfig, OperateConfig, RegistryConfig, ServeConfig, parse_config
    from tunewise.monitor import monitor
    from tunewise.pipeline import run
    from tunewise.registry import open_registry
    from tunewise.serve import create_app
    from tunewise.serve.auth import create_key

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "sentiment.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows()))
    ws = tmp_path / "ws"
    (tmp_path / "operate.yaml").write_text(yaml.safe_dump({"registry": {"workspace": str(ws)}}))
    cli = CliRunner()

    # train (a barely trained first model) → register → promote
    first = run_config(tmp_path, data, "v1", lr=1e-9, epochs=1)
    first["model"]["base"] = str(tiny_model_dir)
    run(parse_config(first))
    r = cli.invoke(app, ["registry", "register", str(tmp_path / "runs" / "v1"), "--name", "clf", "-c", "operate.yaml"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["registry", "promote", "-c", "operate.yaml"])
    assert r.exit_code == 0 and "promoted clf:v1" in r.output, r.output

    # serve → requests on a topic the model never saw → feedback with corrections
    reg = open_registry(RegistryConfig(workspace=ws))
    cfg = OperateConfig(registry=reg.cfg, serve=ServeConfig(max_tokens=4),
                        monitor=MonitorConfig(min_requests=20, permutations=200))
    client = TestClient(create_app(cfg, reg))
    client.headers["Authorization"] = "Bearer " + create_key(reg.engine, "loop")
    rng = random.Random(0)
    for i in range(40):
        good = i % 2 == 0
        # Distinct requests: retrain scores the candidate on held-out corrections, and repeats of trained ones
        # are left out of those (they would test memory).
        text = f"the {' '.join(rng.sample(BANK, 5))} was {rng.choice(GOOD if good else BAD)}"
        resp = client.post("/v1/chat/completions", json={"model": "production", "messages": [
            {"role": "user", "content": text}]})
        assert resp.status_code == 200 and resp.json()["model"] == "clf:v1"
        fb = client.post("/v1/feedback", json={"request_id": resp.json()["id"], "rating": -1,
                                               "correction": "positive" if good else "negative"})
        assert fb.status_code == 200

    # monitor flags drift
    mon = monitor(cfg, reg, tmp_path / "monitor")
    assert mon.retrain_recommended, mon.checks
    assert mon.feedback["corrections"] == 40 and mon.report.is_file()

    # retrain with a real learning rate → gated promotion
    candidate_cfg = run_config(tmp_path, data, "unused", lr=2e-2, epochs=6)
    candidate_cfg["model"]["base"] = str(tiny_model_dir)
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(candidate_cfg))
    r = cli.invoke(app, ["retrain", "--train-config", "candidate.yaml", "-c", "operate.yaml"])
    assert r.exit_code == 0, r.output
    print(r.output)
    assert "promoted to production" in r.output, r.output
    prod = reg.model("production")
    assert prod.ref == "clf:v2" and prod.parent_id == reg.model("clf:v1").id
    new_ds = reg.dataset_record(prod.dataset_hash)
    assert new_ds["parent_hash"] == reg.model("clf:v1").dataset_hash
    assert prod.test_set_hash == reg.model("clf:v1").test_set_hash  # the same frozen test set
    promo = reg.events()[0]
    held = promo["gate"]["feedback_slice"]  # judged on corrections it did not train on
    assert promo["action"] == "promote" and promo["gate"]["passed"] and held["passed"]
    assert held["n"] == 12 and held["trained_on"] == 28 and held["candidate"] > held["production"]
    assert "retrain with 28 feedback corrections; 12 held out" in promo["reason"]

    # the running server picks up the new production model without a restart
    ask = {"model": "production", "messages": [{"role": "user", "content": "i love this film , it was very nice"}]}
    assert client.post("/v1/chat/completions", json=ask).json()["model"] == "clf:v2"

    # rollback in one command
    r = cli.invoke(app, ["registry", "rollback", "--reason", "loop test", "-c", "operate.yaml"])
    assert r.exit_code == 0 and "production is clf:v1 again" in r.output, r.output
    assert client.post("/v1/chat/completions", json=ask).json()["model"] == "clf:v1"
    r = cli.invoke(app, ["registry", "show", "clf:v2", "-c", "operate.yaml"])
    assert r.exit_code == 0 and "retrain" in r.output
