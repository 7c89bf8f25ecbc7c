"""tunewise.data.prepare / check: the pass the pipeline and the CLI share, and the card it writes."""

import json

import pytest

from tunewise.config import parse_config
from tunewise.data import check, prepare
from tunewise.errors import DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(n=60):
    # Two regions: "eu" rows are almost all label a, "us" rows label b: a slice the audit must flag.
    return [
        {
            "text": f"request number {i} concerns item {i * 13} in store {i % 7}",
            "label": "a" if i % 10 else "b",
            "region": "eu",
            "user": f"u{i // 3}",
        }
        for i in range(n)
    ] + [
        {"text": f"us customer {i} asks about parcel {i * 17}", "label": "b", "region": "us", "user": f"v{i}"}
        for i in range(30)
    ]


def _cfg(tmp_path, model, **data):
    return parse_config(
        {
            "model": {"base": str(model)},
            "seed": 3,
            "data": {"paths": [str(tmp_path / "d.jsonl")], "split": {"val": 10, "test": 10}, **data},
        }
    )


def test_prepare_splits_writes_the_card_and_records_the_hash(tmp_path, tiny_model_dir):
    _write(
        tmp_path / "d.jsonl",
        _rows() + [{"text": "request number 1 concerns item 13 in store 1", "label": "b"}],
    )
    data = prepare(_cfg(tmp_path, tiny_model_dir, slice_columns=["region"], group_column="user"))
    card = data.card
    assert card.conflicts["count"] == 1  # same input as line 2 with another label
    assert any("slice region=us" in w for w in card.warnings)
    assert any("only 91 usable rows" in w for w in card.warnings)
    assert card.content_hash == data.content_hash
    assert sum(card.splits["counts"].values()) + sum(card.leakage["removed"].values()) == 91
    data.write(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "card.json").read_text())
    assert saved["content_hash"] == data.content_hash and saved["token_lengths"]["measured"]
    html = (tmp_path / "out" / "card.html").read_text()
    assert 'src="data:image/png;base64,' in html and "http" not in html.replace("http-equiv", "")
    assert (tmp_path / "out" / "leakage.json").is_file()


def test_same_data_gives_the_same_hash_in_check_and_prepare(tmp_path, tiny_model_dir):
    _write(tmp_path / "d.jsonl", _rows())
    cfg = _cfg(tmp_path, tiny_model_dir)
    assert check(cfg, tmp_path / "c").content_hash == prepare(cfg).content_hash


def test_pii_policies(tmp_path, tiny_model_dir):
    rows = _rows(20) + [{"text": "write to me at ann@example.com", "label": "a"}]
    _write(tmp_path / "d.jsonl", rows)
    redacted = prepare(_cfg(tmp_path, tiny_model_dir, pii="redact"))
    texts = [r.input_text for r in redacted.train + redacted.val + redacted.test]
    assert "write to me at <EMAIL>" in texts and redacted.card.pii["occurrences"] == {"email": 1}
    dropped = prepare(_cfg(tmp_path, tiny_model_dir, pii="drop"))
    assert [q.reason for q in dropped.rejected] == ["contains PII (email); data.pii is drop"]
    assert dropped.card.pii["occurrences"] == {"email": 1} and dropped.card.pii["rows"] == {"email": 1}
    reported = prepare(_cfg(tmp_path, tiny_model_dir, pii="report"))
    assert any("ann@example.com" in r.input_text for r in reported.train + reported.val + reported.test)


def test_official_test_rows_that_repeat_training_rows_are_removed_when_deduplicated(tmp_path, tiny_model_dir):
    _write(tmp_path / "d.jsonl", _rows())
    _write(tmp_path / "t.jsonl", [_rows()[5], {"text": "a fresh held out question", "label": "b"}])
    data = prepare(_cfg(tmp_path, tiny_model_dir, test_paths=[str(tmp_path / "t.jsonl")],
                        official_test="deduplicated"))
    assert [r.input_text for r in data.test] == ["a fresh held out question"]
    assert data.card.leakage["removed"]["test"] == 1


def test_no_usable_rows_is_a_data_error_after_writing_the_quarantine(tmp_path, tiny_model_dir):
    (tmp_path / "d.jsonl").write_text('{"text": 1}\n{"broken\n')
    with pytest.raises(DataError, match="no usable rows: all 2 rows"):
        check(_cfg(tmp_path, tiny_model_dir), tmp_path / "c")
    assert len((tmp_path / "c" / "quarantine.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "c" / "card.html").is_file()


def test_formats_are_detected_per_file_and_columns_can_be_mapped(tmp_path, tiny_model_dir):
    _write(
        tmp_path / "qa.jsonl",
        [{"question": "what is 2+2", "answer": "4"}, {"question": "3+3", "answer": "6"}],
    )
    cfg = parse_config(
        {
            "task": {"type": "generation"},
            "model": {"base": str(tiny_model_dir)},
            "data": {
                "paths": [str(tmp_path / "qa.jsonl")],
                "format": "prompt_completion",
                "columns": {"prompt": "question", "completion": "answer"},
            },
        }
    )
    card = check(cfg, tmp_path / "c", tmp_path / "c" / "clean.jsonl")
    assert card.sources[0]["format"] == "prompt_completion (prompt←question, completion←answer)"
    first = json.loads((tmp_path / "c" / "clean.jsonl").read_text().splitlines()[0])
    assert first["messages"] == [
        {"role": "user", "content": "what is 2+2"},
        {"role": "assistant", "content": "4"},
    ]


def test_official_test_set_is_kept_as_published_and_its_leaks_reported(tmp_path, tiny_model_dir):
    _write(tmp_path / "d.jsonl", _rows())
    test_rows = [{"text": "request number 5 concerns item 65 in store 5", "label": "a"},  # leaks from train
                 {"text": "a brand new question about refunds", "label": "b"},
                 {"text": "a brand new question about refunds", "label": "b"}]  # published duplicate, kept
    _write(tmp_path / "t.jsonl", test_rows)
    cfg = _cfg(tmp_path, tiny_model_dir, test_paths=[str(tmp_path / "t.jsonl")])
    data = prepare(cfg)
    assert len(data.test) == 3
    leaked = [r for r in data.test if r.meta.get("leaked_from_train")]
    assert [r.input_text for r in leaked] == [test_rows[0]["text"]]
    assert data.card.leakage["kept"]["test"] == 1 and data.card.leakage["removed"]["test"] == 0

    dedup_cfg = _cfg(tmp_path, tiny_model_dir, test_paths=[str(tmp_path / "t.jsonl")], official_test="deduplicated")
    assert [r.input_text for r in prepare(dedup_cfg).test] == [test_rows[1]["text"]]


def test_split_seed_pins_the_split_whatever_the_run_seed(tmp_path, tiny_model_dir):
    # Model-soup ingredients differ only in `seed`; with data.split.seed they must share train/val/test.
    _write(tmp_path / "d.jsonl", _rows())

    def splits(seed, split_seed=None):
        cfg = _cfg(tmp_path, tiny_model_dir)
        cfg = cfg.model_copy(update={"seed": seed, "data": cfg.data.model_copy(update={
            "split": cfg.data.split.model_copy(update={"seed": split_seed})})})
        data = prepare(cfg)
        return [[r.input_text for r in rs] for rs in (data.train, data.val, data.test)]

    assert splits(1, split_seed=42) == splits(42)
    assert splits(1) != splits(42)


def test_e2e_files_split_by_mr_and_the_official_test_is_grouped_into_multi_reference_examples(
        tmp_path, tiny_model_dir):
    from tunewise.testing import e2e_config

    cfg = parse_config(e2e_config(tmp_path, tiny_model_dir))
    data = prepare(cfg)
    train_mrs, val_mrs = {r.meta["mr"] for r in data.train}, {r.meta["mr"] for r in data.val}
    assert val_mrs and not train_mrs & val_mrs  # grouped by the input column itself: no MR in two splits
    assert len(data.train) + len(data.val) == 14 * 3
    assert all(r.input_text == r.meta["mr"] for r in data.train)  # the mr column is the prompt
    assert len(data.test) == 5 and all(len(r.references) == 3 for r in data.test)
    assert data.test[0].answer == data.test[0].references[0] and data.test[0].meta["rows"] == 3
    assert "15 test rows grouped by input into 5 multi-reference examples" in data.card.splits["method"]
    data.write(tmp_path / "out")  # the canonical test.jsonl keeps every reference, and reads back with them
    from tunewise.data.formats import read_records

    back, rejected = read_records(tmp_path / "out" / "test.jsonl")
    assert not rejected and [r.references for r in back] == [r.references for r in data.test]


def test_a_carved_generation_test_split_is_grouped_too_and_can_be_left_per_row(tmp_path, tiny_model_dir):
    from tunewise.testing import e2e_config

    raw = e2e_config(tmp_path, tiny_model_dir)
    raw["data"].pop("test_paths")
    raw["data"]["split"] = {"val": 6, "test": 9}
    data = prepare(parse_config(raw))
    assert not {r.meta["mr"] for r in data.train} & {r.meta["mr"] for r in data.test}
    assert len(data.test) == 3 and sum(len(r.references) for r in data.test) == 9
    raw["data"]["group_test_references"] = False
    per_row = prepare(parse_config(raw))
    assert len(per_row.test) == 9 and all(r.references is None for r in per_row.test)
