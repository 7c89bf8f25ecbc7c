import csv
import hashlib
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


def _data_file(tmp_path, rows):
    import json

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# Hex digests keep every pair of rows far apart, so dedup removes only the copies a test adds.
GOOD = [{"text": f"message {hashlib.sha1(str(i).encode()).hexdigest()[:20]}", "label": "ab"[i % 2]} for i in range(30)]


def test_data_check_writes_the_card_and_exits_0_with_warnings(tmp_path, tiny_model_dir):
    path = _data_file(tmp_path, [*GOOD, {"text": 5, "label": "a"}])
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "check", str(path), "--out", str(out), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert "1 quarantined" in result.output and "warning:" in result.output
    assert {p.name for p in out.iterdir()} == {"card.json", "card.html", "quarantine.jsonl"}
    strict = runner.invoke(app, ["data", "check", str(path), "--out", str(out), "--model", str(tiny_model_dir),
                                 "--strict"])
    assert strict.exit_code == 1 and "--strict: 1 rows quarantined" in strict.output


def test_data_clean_honours_strict_but_still_writes_the_clean_rows(tmp_path, tiny_model_dir):
    path = _data_file(tmp_path, [*GOOD, {"text": 5, "label": "a"}])
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "clean", str(path), "--out", str(out), "--model", str(tiny_model_dir),
                                 "--strict"])
    assert result.exit_code == 1 and "--strict: 1 rows quarantined" in result.output
    assert len((out / "clean.jsonl").read_text().splitlines()) == len(GOOD)


def test_data_check_exit_1_when_no_row_is_usable_and_2_for_usage(tmp_path, tiny_model_dir):
    path = _data_file(tmp_path, [{"text": 5}, {"label": "x"}])
    result = runner.invoke(app, ["data", "check", str(path), "--out", str(tmp_path / "o"),
                                 "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and "no usable rows" in result.output
    missing = runner.invoke(app, ["data", "check", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "file not found" in missing.output
    bad_task = runner.invoke(app, ["data", "check", str(path), "--task", "regression"])
    assert bad_task.exit_code == 2


def test_data_clean_and_split(tmp_path, tiny_model_dir):
    path = _data_file(tmp_path, GOOD + GOOD[:3])
    out = tmp_path / "clean"
    result = runner.invoke(app, ["data", "clean", str(path), "--out", str(out), "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    assert len((out / "clean.jsonl").read_text().splitlines()) == 30  # 3 exact duplicates removed
    split = tmp_path / "split"
    result = runner.invoke(app, ["data", "split", str(out / "clean.jsonl"), "--out", str(split), "--val", "4",
                                 "--test", "6", "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    sizes = [len((split / f"{n}.jsonl").read_text().splitlines()) for n in ("train", "val", "test")]
    assert sizes == [20, 4, 6] and (split / "leakage.json").is_file() and (split / "card.html").is_file()

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
