import csv
import json

import pytest

from tunewise.errors import ConfigError
from tunewise.report import export_review
from tunewise.report.review import review_rows


def write_predictions(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "predictions.jsonl").open("w") as fh:
        for inp, ref, outs in rows:
            fh.write(json.dumps({"input": inp, "reference": ref, "outputs": outs,
                                 "correct": {s: o == ref for s, o in outs.items()},
                                 "score": {s: float(o == ref) for s, o in outs.items()}}) + "\n")


ROWS = [("all right", "a", {"zero_shot": "a", "fine_tuned": "a"}),
        ("ft wrong only", "a", {"zero_shot": "a", "fine_tuned": "b"}),
        ("both wrong", "b", {"zero_shot": "a", "fine_tuned": "a"}),
        ("ft right only", "b", {"zero_shot": "a", "fine_tuned": "b"})]


def test_wrong_answers_first(tmp_path):
    write_predictions(tmp_path, ROWS)
    systems, rows = review_rows(tmp_path, 10)
    assert systems == ["zero_shot", "fine_tuned"]
    # Fine-tuned wrong first (the one every system got wrong before the one only it got wrong), then right.
    assert [r["input"] for r in rows] == ["both wrong", "ft wrong only", "ft right only", "all right"]
    assert len(review_rows(tmp_path, 2)[1]) == 2


def test_export_writes_csv_and_html(tmp_path):
    write_predictions(tmp_path, ROWS)
    csv_path, html_path = export_review(tmp_path, 3)
    table = list(csv.reader(csv_path.open()))
    assert table[0] == ["input", "reference", "zero_shot", "zero_shot correct", "zero_shot score", "fine_tuned",
                        "fine_tuned correct", "fine_tuned score"]
    assert [r[0] for r in table[1:]] == ["both wrong", "ft wrong only", "ft right only"]
    html = html_path.read_text()
    assert html.count("✗ wrong") == 4 and "both wrong" in html and "all right" not in html


def test_no_predictions_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no predictions.jsonl"):
        export_review(tmp_path, 3)
