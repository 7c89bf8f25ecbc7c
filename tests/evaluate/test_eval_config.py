"""The `eval` section of the run config (tunewise/config.py)."""

import pytest
import yaml

from tunewise.config import load_config, parse_config
from tunewise.errors import ConfigError


def test_forgetting_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mc.jsonl").write_text("{}\n")
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n')
    cfg_path = tmp_path / "sub" / "run.yaml"
    cfg_path.write_text(yaml.safe_dump({"data": {"paths": ["../d.jsonl"]},
                                        "eval": {"forgetting": {"mc_path": "mc.jsonl"}}}))
    cfg = load_config(cfg_path)
    assert cfg.eval.forgetting.mc_path == (tmp_path / "sub" / "mc.jsonl").resolve()


@pytest.mark.parametrize("section,message", [
    ({"eval": {"classification_mode": "vote"}}, "eval.classification_mode"),
    ({"eval": {"forgetting": {"mc_path": "/nope.jsonl"}}}, "file not found: /nope.jsonl"),
    ({"eval": {"bootstrap_resamples": 10}}, "eval.bootstrap_resamples"),
    ({"eval": {"few_shot_selection": "nearest"}}, "eval.few_shot_selection"),
    ({"eval": {"forgetting": {"max_drop": 1.5}}}, "eval.forgetting.max_drop"),
    ({"eval": {"forgetting": {"max_kl": 0}}}, "eval.forgetting.max_kl"),
    ({"eval": {"forgetting": {"threshold": 0.1}}}, "eval.forgetting.threshold: unknown key"),
])
def test_bad_eval_settings_are_one_line_errors(section, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({"data": {"builtin": "bbc_news"}, **section})
