import json
import re
import shutil

import pytest

from tunewise.errors import ConfigError
from tunewise.report import write_report


@pytest.fixture
def cls_run(tiny_runs, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_runs["classification"][0].run_dir, folder)
    return folder


def test_report_has_every_section_and_no_network(cls_run):
    html = write_report(cls_run).read_text()
    for anchor in ('id="verdict"', 'id="results"', 'id="metric-bars"', 'id="comparisons"', 'id="inference"',
                   'id="cost-plot"', 'class="confusion"', 'id="per-class"', 'id="forgetting-plot"', 'id="loss-plot"',
                   'id="samples"', 'id="training-cost"'):
        assert anchor in html, anchor
    assert html.count('class="confusion"') == 2  # the fine-tuned model and the best baseline
    assert "TF-IDF + logistic regression" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 6
    assert 'id="card"' in html and 'href="data/card.html"' in html  # the data stage's card


def test_no_card_section_without_a_card(cls_run):
    (cls_run / "data" / "card.json").unlink()
    assert 'id="card"' not in write_report(cls_run).read_text()


def test_data_card_summary_and_cost_estimate(cls_run):
    (cls_run / "data" / "card.json").write_text(json.dumps({"rows": 42, "warnings": ["3 near-duplicates"],
                                                            "counts": {"kept": 40, "by_split": {"train": 30}}}))
    train = json.loads((cls_run / "train_result.json").read_text())
    train["estimate"] = {"hours": 0.5, "cost_usd": 1.25, "peak_memory_gib": 3.0}
    (cls_run / "train_result.json").write_text(json.dumps(train))
    html = write_report(cls_run).read_text()
    assert "3 near-duplicates" in html and "kept: 40 · also by_split" in html
    assert "1.2500" in html and "0.500" in html


def test_generation_report_has_no_confusion_matrix(tiny_runs):
    html = write_report(tiny_runs["generation"][0].run_dir).read_text()
    assert 'class="confusion"' not in html and "perplexity" in html and "rouge_l" in html


def test_report_needs_metrics(tmp_path):
    with pytest.raises(ConfigError, match="metrics.json"):
        write_report(tmp_path)
