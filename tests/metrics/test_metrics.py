"""Training metric names: resolution, task fit and direction."""

import pytest

from tunewise.config import parse_config
from tunewise.errors import ConfigError
from tunewise.metrics import score_generated, training_metric


def test_names_resolve_with_or_without_the_eval_prefix():
    assert training_metric("eval_loss").key == "eval_loss" and not training_metric("eval_loss").generated
    assert training_metric("answer_exact_match").key == "eval_answer_exact_match"
    rouge = training_metric("eval_rouge_l")
    assert (rouge.name, rouge.key, rouge.generated, rouge.greater_is_better) == ("rouge_l", "eval_rouge_l", True, True)
    assert not training_metric("slot_error_rate").greater_is_better and not training_metric("loss").greater_is_better
    user = training_metric("tests.metrics.user_metrics:errors")
    assert user.key == "eval_tests.metrics.user_metrics.errors" and not user.greater_is_better
    with pytest.raises(ValueError, match="unknown metric 'rougeL'"):
        training_metric("rougeL")
    with pytest.raises(ValueError, match="json_f1 is a metric of extraction tasks, not generation"):
        training_metric("json_f1", "generation")


def test_the_config_refuses_a_metric_of_another_task():
    raw = {"data": {"builtin": "bbc_news"}, "train": {"early_stopping": {"metric": "bleu"}}}
    with pytest.raises(ConfigError, match="bleu is a metric of generation tasks, not classification"):
        parse_config(raw)
    raw["task"] = {"type": "generation"}
    assert parse_config(raw).train.early_stopping.metric == "bleu"


def test_score_generated_matches_the_evaluation_definitions():
    preds, refs = ["The Eagle is cheap."], [["The Eagle is cheap.", "Cheap: The Eagle."]]
    assert score_generated("bleu", preds, refs, ["name[The Eagle], priceRange[cheap]"]) == pytest.approx(100)
    ser = score_generated("slot_error_rate", preds, refs, ["name[The Eagle], priceRange[cheap], area[riverside]"])
    assert ser == pytest.approx(1 / 3)
    assert score_generated("json_valid", ['{"a": 1}'], [['{"a": 1}']], [""]) == 1.0
    assert score_generated("tests.metrics.user_metrics:errors", preds, refs, [""]) == 0.0
