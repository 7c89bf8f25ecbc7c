from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import load_config

runner = CliRunner()


def test_config_error_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("data: {builtin: bbc_news}\nbogus: 1\n")
    result = runner.invoke(app, ["run", str(cfg)])
    assert result.exit_code == 2
    assert "bogus: unknown key" in result.output
    assert "Traceback" not in result.output


def test_missing_config_file_exit_2(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "config file not found" in result.output


def test_init_writes_a_config_that_parses_once_data_exists(tmp_path):
    target = tmp_path / "tw.yaml"
    result = runner.invoke(app, ["init", str(target)])
    assert result.exit_code == 0, result.output
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "hello", "label": "a"}\n')
    cfg = load_config(target)
    assert cfg.name == "my-run"
    # a second init refuses to overwrite
    assert runner.invoke(app, ["init", str(target)]).exit_code == 2


def test_report_on_a_folder_without_metrics_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "no metrics.json" in result.output
