"""`tunewise soup` through the CLI, then `tunewise eval` on the soup, as examples/banking77_soup.sh runs them."""

import json

from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import dump_config
from tunewise.testing import save_tiny_model, tiny_config

runner = CliRunner()


def test_soup_command_writes_a_model_that_eval_takes(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir, "classification", classification_mode="score", few_shot_k=0)
    path = tmp_path / "cfg.yaml"
    dump_config(cfg, path)
    other = save_tiny_model(tmp_path / "m1", seed=1)
    result = runner.invoke(app, ["soup", str(path), str(tiny_model_dir), str(other), "--greedy",
                                 "--set", "name=tiny-soup"])
    assert result.exit_code == 0, result.output
    assert "greedy soup: validation accuracy" in result.output and "kept" in result.output
    run = cfg.output_dir / "tiny-soup"
    soup = json.loads((run / "model" / "soup.json").read_text())
    assert soup["method"] == "greedy" and len(soup["ingredients"]) == 2 and soup["kept"]
    assert json.loads((run / "manifest.json").read_text())["soup"]["kept"] == soup["kept"]

    again = runner.invoke(app, ["soup", str(path), str(other), "--set", "name=tiny-soup"])
    assert again.exit_code == 2 and "--force" in again.output  # the soup is not overwritten silently

    evaluated = runner.invoke(app, ["eval", str(path), "--set", "name=tiny-soup"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "fine_tuned" in json.loads((run / "metrics.json").read_text())["test"]


def test_soup_of_a_folder_that_is_no_model_is_a_usage_error(tmp_path, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_model_dir)
    path = tmp_path / "cfg.yaml"
    dump_config(cfg, path)
    result = runner.invoke(app, ["soup", str(path), str(tmp_path)])
    assert result.exit_code == 2 and "not a model folder" in result.output and "Traceback" not in result.output
