"""Extraction metrics on valid, wrapped and invalid JSON answers, counted by hand."""

import json

import numpy as np
import pytest

from tunewise.errors import ConfigError
from tunewise.metrics.extraction import (
    extraction_examples,
    flatten,
    load_schema,
    parse_json_object,
    resampled_extraction,
)

REF = json.dumps({"name": "Ada Lovelace", "born": 1815, "address": {"city": "London"}, "tags": ["math", "poet"]})
SCHEMA = {"type": "object", "required": ["name", "born"], "properties": {"born": {"type": "integer"}}}


def test_objects_are_found_in_fences_and_sentences_and_nothing_else_counts():
    assert parse_json_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_object('Sure! Here it is: {"a": {"b": 2}} Hope it helps.') == {"a": {"b": 2}}
    assert parse_json_object("[1, 2]") is None and parse_json_object("{'a': 1}") is None
    assert parse_json_object("no json") is None


def test_leaves_are_keyed_by_path_and_lists_are_multisets():
    got = flatten(json.loads(REF))
    assert got == {("name", "ada lovelace"): 1, ("born", "1815"): 1, ("address.city", "london"): 1,
                   ("tags[]", "math"): 1, ("tags[]", "poet"): 1}
    assert flatten({"tags": ["poet", "math"]}) == flatten({"tags": ["math", "poet"]})
    assert flatten({"n": "3.0"}) == flatten({"n": 3})


def test_field_precision_recall_f1_validity_and_schema():
    preds = [
        # 4 of 5 fields right (born wrong), one extra field: tp 4, predicted 6
        '{"name": "ada  LOVELACE", "born": 1816, "address": {"city": "London"}, "tags": ["poet", "math"], "x": 1}',
        "I could not find anything.",  # invalid: no fields
        REF,  # exact
    ]
    ex = extraction_examples(preds, [REF, REF, REF], SCHEMA)
    assert ex["json_valid"] == [1, 0, 1] and ex["json_tp"] == [4, 0, 5]
    assert ex["json_pred_fields"] == [6, 0, 5] and ex["json_ref_fields"] == [5, 5, 5]
    assert ex["json_exact_match"] == [0, 0, 1] and ex["json_schema_valid"] == [1, 0, 1]
    got = {k: v[0] for k, v in resampled_extraction(ex, np.arange(3)[None, :]).items()}
    assert got["json_precision"] == pytest.approx(9 / 11)
    assert got["json_recall"] == pytest.approx(9 / 15)
    assert got["json_f1"] == pytest.approx(2 * 9 / (11 + 15))
    assert got["json_valid"] == pytest.approx(2 / 3) and got["json_schema_valid"] == pytest.approx(2 / 3)
    assert "json_schema_valid" not in extraction_examples(preds, [REF] * 3)


def test_schema_from_a_file_and_a_bad_schema(tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    assert load_schema(path) == SCHEMA
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        load_schema({"type": "no-such-type"})
    with pytest.raises(ConfigError, match="not a readable JSON file"):
        load_schema(tmp_path / "missing.json")
