from pathlib import Path

import pytest

from tunewise.config import load_config, parse_config
from tunewise.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "data: {builtin: bbc_news}\n"))
    assert cfg.task.type == "classification"
    assert cfg.model.base == "embedded:smollm2-135m-instruct"
    assert cfg.run_dir == Path("runs/run")


def test_unknown_key_names_its_path(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml: train.lora.rank: unknown key"):
        load_config(write(tmp_path, "data: {builtin: bbc_news}\ntrain: {lora: {rank: 8}}\n"))


def test_wrong_type_names_its_path(tmp_path):
    with pytest.raises(ConfigError, match=r"train.epochs: .*number"):
        load_config(write(tmp_path, "data: {builtin: bbc_news}\ntrain: {epochs: many}\n"))


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data: file not found: .*nope.jsonl"):
        load_config(write(tmp_path, "data: {paths: [nope.jsonl]}\n"))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/config.yaml")


def test_relative_data_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n')
    cfg = load_config(write(tmp_path, "data: {paths: [d.jsonl]}\n"))
    assert cfg.data.paths[0] == tmp_path / "d.jsonl"


def test_parse_config_requires_a_data_source():
    with pytest.raises(ConfigError, match="data"):
        parse_config({"data": {}})


def test_dotted_overrides_are_typed_and_validated(tmp_path):
    from tunewise.config import parse_overrides

    path = write(tmp_path, "data: {builtin: bbc_news}\n")
    cfg = load_config(path, parse_overrides(["train.epochs=3", "train.lora.target_modules=[q_proj, v_proj]"]))
    assert cfg.train.epochs == 3 and cfg.train.lora.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="train.nope: unknown key"):
        load_config(path, parse_overrides(["train.nope=1"]))
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_overrides(["train.epochs"])


def test_code_and_schema_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "{}"}\n')
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("data: {paths: [d.jsonl]}\ntask: {type: extraction, json_schema: s.json}\n"
                        "eval: {metrics: ['my_metrics.py:recall', 'pkg.mod:f']}\n"
                        "train: {early_stopping: {metric: 'my_metrics.py:recall'}}\n")
    cfg = load_config(cfg_path)
    assert cfg.task.json_schema == tmp_path / "s.json"
    assert cfg.eval.metrics == [f"{tmp_path / 'my_metrics.py'}:recall", "pkg.mod:f"]
    assert cfg.train.early_stopping.metric == f"{tmp_path / 'my_metrics.py'}:recall"


def test_generation_settings_are_checked():
    base = {"data": {"builtin": "bbc_news"}}
    with pytest.raises(ConfigError, match="eval.metrics: 'bleu' is not module:function"):
        parse_config({**base, "task": {"type": "generation"}, "eval": {"metrics": ["bleu"]}})
    with pytest.raises(ConfigError, match="json_schema applies to task.type extraction only"):
        parse_config({**base, "task": {"type": "generation", "json_schema": {"type": "object"}}})
    with pytest.raises(ConfigError, match="train.early_stopping.metric: unknown metric 'rougeL'"):
        parse_config({**base, "task": {"type": "generation"}, "train": {"early_stopping": {"metric": "rougeL"}}})
    cfg = parse_config({**base, "task": {"type": "generation"}})
    assert (cfg.eval.few_shot_selection, cfg.eval.slot_errors) == ("auto", "auto")
