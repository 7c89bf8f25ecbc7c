from collections import Counter

from tunewise.config import DataConfig
from tunewise.data.audit import IMBALANCE_RATIO, audit
from tunewise.data.scan import ScanStats


def stats(counts: dict) -> ScanStats:
    return ScanStats(rows=sum(counts.values()), kept=sum(counts.values()), labels=Counter(counts))


def test_imbalanced_classes_make_macro_f1_the_verdicts_metric():
    found = audit(stats({"a": 10 * IMBALANCE_RATIO + 1, "b": 10}), DataConfig(builtin="bbc_news"), True)
    assert found.recommended_metric == "macro_f1" and "imbalanced" in found.metric_reason
    assert any("read macro-F1" in w for w in found.warnings)


def test_balanced_classes_keep_accuracy_and_generation_gets_no_recommendation():
    balanced = audit(stats({"a": 10 * IMBALANCE_RATIO, "b": 10}), DataConfig(builtin="bbc_news"), True)
    assert balanced.recommended_metric == "accuracy"
    assert audit(stats({}), DataConfig(builtin="bbc_news"), False).recommended_metric is None
