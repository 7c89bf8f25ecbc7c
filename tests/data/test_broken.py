"""The broken-input corpus (tests/fixtures/broken, written by make_broken.py): every bad row quarantined with
the right file, line, field and reason; every good row kept."""

import json
from pathlib import Path

import pytest

from tunewise.config import parse_config
from tunewise.data import check

BROKEN = Path(__file__).parents[1] / "fixtures" / "broken"

# file → (good rows kept, {line: (field, reason starts with)})
CLASSIFICATION = {
    "truncated.jsonl": (3, {4: ("(line)", "malformed JSON")}),
    "bom_crlf.jsonl": (3, {}),
    "latin1.csv": (2, {3: ("text", "not UTF-8")}),
    "latin1.jsonl": (2, {2: ("(line)", "not UTF-8: byte 0xe9")}),
    "empty.jsonl": (0, {}),
    "empty.csv": (0, {}),
    "missing_column.csv": (2, {3: ("label", "missing field"), 4: ("(row)", "wrong shape")}),
    "wrong_types.jsonl": (
        2,
        {
            1: ("text", "wrong type"),
            2: ("label", "wrong type"),
            3: ("text", "missing field"),
            4: ("text", "empty field"),
            5: ("label", "wrong type"),
            7: ("text", "missing field"),
            9: ("(line)", "wrong shape"),
        },
    ),
    "truncated_array.json": (2, {4: ("(item)", "malformed JSON")}),
    "control_chars.jsonl": (
        1,
        {
            2: ("messages[0].content", "control character U+0000"),
            3: ("messages[0].content", "control character U+0007"),
        },
    ),
}
GENERATION = {
    "chat.jsonl": (
        2,
        {
            3: ("messages[1].role", "unknown role 'bot'"),
            4: ("messages[0].role", "roles out of order"),
            5: ("messages", "no assistant turn"),
            6: ("messages[1].content", "empty field"),
            7: ("messages", "wrong type"),
            8: ("messages", "roles out of order"),
        },
    ),
    "sharegpt.json": (1, {14: ("conversations[1].from", "unknown role 'robot'")}),
    "alpaca.jsonl": (2, {3: ("output", "missing field"), 4: ("input", "wrong type")}),
    "prompt_completion.jsonl": (1, {2: ("completion", "missing field")}),
}


def _run(tmp_path, task: str, files: list[Path], model: Path, **data) -> tuple:
    cfg = parse_config(
        {
            "task": {"type": task},
            "model": {"base": str(model)},
            "data": {"paths": [str(f) for f in files], **data},
        }
    )
    card = check(cfg, tmp_path, tmp_path / "clean.jsonl")
    quarantine = [json.loads(x) for x in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    kept = [json.loads(x) for x in (tmp_path / "clean.jsonl").read_text().splitlines()]
    return card, quarantine, kept


@pytest.mark.parametrize("task,expected", [("classification", CLASSIFICATION), ("generation", GENERATION)])
def test_every_bad_row_quarantined_with_its_reason_and_every_good_row_kept(
    tmp_path, tiny_model_dir, task, expected
):
    card, quarantine, kept = _run(tmp_path, task, [BROKEN / f for f in expected], tiny_model_dir)
    got: dict[str, dict[int, tuple[str, str]]] = {}
    for q in quarantine:
        got.setdefault(Path(q["file"]).name, {})[q["line"]] = (q["field"], q["reason"])
    for name, (n_good, bad) in expected.items():
        found = got.get(name, {})
        assert set(found) == set(bad), name
        for line, (fld, reason) in bad.items():
            assert found[line][0] == fld and found[line][1].startswith(reason), (name, line, found[line])
        kept_here = [k for k in kept if Path(k["meta"]["source"]).name == name]
        assert len(kept_here) == n_good, name
    assert card.counts["usable"] == len(kept) == sum(n for n, _ in expected.values())
    assert card.counts["quarantined"] == len(quarantine) == sum(len(b) for _, b in expected.values())
    assert card.counts["rows_read"] == card.counts["usable"] + card.counts["quarantined"]


def test_cleaning_keeps_the_row_with_a_zero_width_space_without_it(tmp_path, tiny_model_dir):
    _, _, kept = _run(tmp_path, "classification", [BROKEN / "control_chars.jsonl"], tiny_model_dir)
    assert kept[0]["messages"][0]["content"] == "zerowidth space is cleaned"


def test_a_10_mb_row_is_quarantined_and_its_neighbours_kept(tmp_path, tiny_model_dir):
    big = tmp_path / "big.jsonl"
    with big.open("w") as fh:
        fh.write(json.dumps({"text": "short row before", "label": "a"}) + "\n")
        fh.write(json.dumps({"text": "x" * 10_000_000, "label": "a"}) + "\n")
        fh.write(json.dumps({"text": "short row after", "label": "b"}) + "\n")
    big_csv = tmp_path / "big.csv"
    big_csv.write_text("text,label\nfine row,a\n" + "y" * 10_000_000 + ",b\n")
    _, quarantine, kept = _run(tmp_path / "out", "classification", [big, big_csv], tiny_model_dir)
    assert [(Path(q["file"]).name, q["line"]) for q in quarantine] == [("big.jsonl", 2), ("big.csv", 3)]
    assert all(q["reason"].startswith("too long: 10,000,00") for q in quarantine)
    assert len(kept) == 3


def test_rows_longer_than_the_model_context_are_quarantined(tmp_path, tiny_model_dir):
    rows = tmp_path / "long.jsonl"
    rows.write_text(
        json.dumps({"text": "card " * 600, "label": "a"})
        + "\n"  # 600 tokens > 512 context
        + json.dumps({"text": "card payment", "label": "b"})
        + "\n"
    )
    card, quarantine, _ = _run(tmp_path / "out", "classification", [rows], tiny_model_dir)
    assert [q["line"] for q in quarantine] == [1]
    assert quarantine[0]["reason"].startswith("too many tokens")
    assert card.quarantine["by_reason"] == {"too many tokens for the model context": 1}


def test_labels_outside_the_declared_set_are_quarantined(tmp_path, tiny_model_dir):
    rows = tmp_path / "l.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps({"text": f"row {i}", "label": lab}) for i, lab in enumerate(["a", "b", "zzz", "a"])
        )
        + "\n"
    )
    cfg = parse_config(
        {
            "task": {"labels": ["a", "b"]},
            "model": {"base": str(tiny_model_dir)},
            "data": {"paths": [str(rows)]},
        }
    )
    card = check(cfg, tmp_path / "out")
    q = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert [(x["line"], x["field"]) for x in q] == [(3, "label")]
    assert card.quarantine["by_reason"] == {"label outside the declared set": 1}


def test_parquet_rows_are_read_and_checked(tmp_path, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "text": ["first parquet row", None, "third parquet row"],
            "label": ["a", "b", "b"],
            "region": ["eu", "us", "eu"],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    _, quarantine, kept = _run(
        tmp_path / "out", "classification", [tmp_path / "d.parquet"], tiny_model_dir
    )
    assert [(q["line"], q["field"], q["reason"]) for q in quarantine] == [(2, "text", "missing field: null")]
    assert [k["meta"]["region"] for k in kept] == ["eu", "eu"]
