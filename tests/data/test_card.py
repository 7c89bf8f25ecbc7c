"""The data card's PII section: which engine ran, what it found by kind, what it cannot find."""

import importlib.util
import json

import pytest

from tunewise.config import parse_config
from tunewise.data import check
from tunewise.data.pii import NOT_DETECTED
from tunewise.errors import ConfigError

ROWS = [
    {"text": "please call 07911 123456 about my card", "label": "a"},
    {"text": "my key is hf_QwErTyUiOpAsDfGhJkLzXcVbNm12345678 and mail ana@example.com", "label": "b"},
    {"text": "nothing personal in this one", "label": "a"},
]
NO_TOKENIZER = (None, "no tokenizer in this test")


def _cfg(tmp_path, **data):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return parse_config({"data": {"paths": [str(src)], "min_rows": 0, **data}})


def test_card_names_the_engine_counts_by_kind_and_lists_what_it_cannot_detect(tmp_path):
    card = check(_cfg(tmp_path, pii_region="GB"), tmp_path / "out", counter=NO_TOKENIZER)
    assert card.pii["engine"] == "builtin" and card.pii["region"] == "GB"
    assert card.pii["occurrences"] == {"phone": 1, "secret": 1, "email": 1}
    html = (tmp_path / "out" / "card.html").read_text(encoding="utf-8")
    assert "Engine: <strong>builtin</strong>" in html and "national phone formats of GB" in html
    assert "Not detected by the builtin engine: personal names, postal addresses, dates of birth" in html
    assert json.loads((tmp_path / "out" / "card.json").read_text())["pii"]["not_detected"] == NOT_DETECTED["builtin"]


def test_the_region_decides_which_national_numbers_are_phones(tmp_path):
    card = check(_cfg(tmp_path), tmp_path / "out", counter=NO_TOKENIZER)
    assert "phone" not in card.pii["occurrences"]  # 07911 123456 is a UK number; the default region is US


@pytest.mark.skipif(importlib.util.find_spec("presidio_analyzer") is not None, reason="presidio is installed")
def test_presidio_engine_without_the_extra_fails_before_reading(tmp_path):
    with pytest.raises(ConfigError, match=r"data.pii_engine: presidio is not installed .*pip install"):
        check(_cfg(tmp_path, pii_engine="presidio"), tmp_path / "out", counter=NO_TOKENIZER)
    assert not (tmp_path / "out" / "card.json").exists()
