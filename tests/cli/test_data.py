import hashlib
import json

from typer.testing import CliRunner

from tunewise.cli import app

runner = CliRunner()


def _data_file(tmp_path, rows):
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
