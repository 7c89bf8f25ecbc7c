import csv
import json
import shutil

from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import dump_config, load_config

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


def copy_run(tiny_runs, task, tmp_path):
    """The session's trained tiny run, copied (config pointing at the copy) so this test may rewrite it."""
    cfg = tiny_runs[task][0].model_copy(update={"output_dir": tmp_path / "runs"})
    shutil.copytree(tiny_runs[task][0].run_dir, cfg.run_dir)
    path = tmp_path / "run.yaml"
    dump_config(cfg, path)
    return cfg, path


def test_eval_with_review_export(tiny_runs, tmp_path):
    cfg, path = copy_run(tiny_runs, "classification", tmp_path)
    (cfg.run_dir / "metrics.json").unlink()
    result = runner.invoke(app, ["eval", str(path), "--review", "4"])
    assert result.exit_code == 0, result.output
    assert "fine-tuned" in result.output and "review:" in result.output
    metrics = json.loads((cfg.run_dir / "metrics.json").read_text())
    shown = next(line for line in result.output.splitlines() if "SHIP" in line)
    assert shown.startswith(f"{'SHIP' if metrics['verdict']['ship'] else 'DO NOT SHIP'} The fine-tuned model scores")
    assert set(metrics["test"]) == {"zero_shot", "few_shot", "classical", "fine_tuned"}
    rows = list(csv.reader((cfg.run_dir / "review.csv").open()))
    assert len(rows) == 5 and (cfg.run_dir / "review.html").is_file() and (cfg.run_dir / "report.html").is_file()


def test_eval_without_adapter_is_a_usage_error(tiny_runs, tmp_path):
    cfg, path = copy_run(tiny_runs, "generation", tmp_path)
    shutil.rmtree(cfg.run_dir / "adapter")
    result = runner.invoke(app, ["eval", str(path)])
    assert result.exit_code == 2
    assert "no PEFT adapter or fine-tuned model here" in result.output


def test_report_rebuilds_from_files(tiny_runs, tmp_path):
    cfg, _ = copy_run(tiny_runs, "generation", tmp_path)
    (cfg.run_dir / "report.html").unlink()
    result = runner.invoke(app, ["report", str(cfg.run_dir), "--review", "2"])
    assert result.exit_code == 0, result.output
    assert (cfg.run_dir / "report.html").is_file()
    assert len(list(csv.reader((cfg.run_dir / "review.csv").open()))) == 3
    assert runner.invoke(app, ["report", str(tmp_path / "nowhere")]).exit_code == 2


def test_accelerate_config_prints_the_shipped_ddp_and_fsdp2_configs():
    import yaml

    fsdp = runner.invoke(app, ["accelerate-config", "fsdp"])
    assert fsdp.exit_code == 0
    cfg = yaml.safe_load(open(fsdp.output.strip()))
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_version"] == 2
    ddp = yaml.safe_load(open(runner.invoke(app, ["accelerate-config", "ddp"]).output.strip()))
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["mixed_precision"] == "bf16"
    wrong = runner.invoke(app, ["accelerate-config", "deepspeed"])
    assert wrong.exit_code == 2 and "expected ddp or fsdp" in wrong.output
