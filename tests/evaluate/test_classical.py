import pytest

from tunewise.config import parse_config
from tunewise.data import PreparedData, prepare
from tunewise.data.records import Record
from tunewise.evaluate.classical import classical_baseline, retrieval_baseline
from tunewise.evaluate.compare import confidence_intervals, resample_indices
from tunewise.testing import tiny_config


def test_tfidf_logistic_regression_learns_separable_topics(tmp_path, tiny_model_dir):
    data = prepare(tiny_config(tmp_path, tiny_model_dir))
    result = classical_baseline(data, seed=0)
    assert result.metrics["accuracy"] == 1.0  # the tiny topics share no words: a linear model must get them
    assert result.inference.device == "CPU" and result.inference.dollars_per_1k_requests >= 0
    assert len(result.predictions) == len(data.test)


def _generation_data(task: str, pairs: list[tuple[str, str]], test: list[tuple[str, list[str]]]) -> PreparedData:
    def rec(prompt, answer, refs=None):
        return Record([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                      references=refs)

    return PreparedData([rec(p, a) for p, a in pairs], [], [rec(p, refs[0], refs) for p, refs in test], None, "h")


def _cfg(task: str, **eval_section):
    return parse_config({"data": {"builtin": "bbc_news"}, "task": {"type": task}, "eval": eval_section})


def test_retrieval_answers_with_the_nearest_training_inputs_output():
    train = [("name[The Eagle], food[French], area[riverside]", "The Eagle serves French food by the river."),
             ("name[Aromi], food[Italian], area[city centre]", "Aromi is an Italian place in the city centre."),
             ("name[The Eagle], food[Italian], area[city centre]", "The Eagle: Italian food, city centre.")]
    test = [("name[Aromi], food[Italian], area[riverside]", ["Aromi serves Italian food by the river."]),
            ("name[The Eagle], food[French], area[city centre]", ["The Eagle serves French food in the centre.",
                                                                 "French food at The Eagle, city centre."])]
    cfg = _cfg("generation", metrics=["tests.metrics.user_metrics:mean_length_ratio"])
    result = retrieval_baseline(cfg, _generation_data("generation", train, test)).add_user_metrics(cfg.eval.metrics)
    assert result.predictions == [train[1][1], train[0][1]]
    assert result.task == "generation" and "retrieval" in result.extra["model"]
    # E2E-style inputs switch the slot error rate on (auto); every metric gets a CI, the user metric too.
    assert result.examples["slot_missing"] == [["area[riverside]"], ["area[city centre]"]]
    assert result.examples["slot_added"] == [["area[city centre]"], ["area[riverside]"]]
    assert result.metrics["slot_error_rate"] == pytest.approx(4 / 6)
    ci = confidence_intervals(result, resample_indices(2, 200, seed=0))
    assert set(ci) == set(result.metrics) and "tests.metrics.user_metrics.mean_length_ratio" in ci
    lo, hi = ci["tests.metrics.user_metrics.mean_length_ratio"]
    assert lo <= result.metrics["tests.metrics.user_metrics.mean_length_ratio"] <= hi and lo < hi


def test_retrieval_on_an_extraction_task_is_scored_field_by_field():
    train = [("Ada Lovelace, born 1815 in London", '{"name": "Ada Lovelace", "born": 1815, "city": "London"}'),
             ("Alan Turing, born 1912 in London", '{"name": "Alan Turing", "born": 1912, "city": "London"}')]
    test = [("Ada Lovelace was born in 1815 in London", ['{"name": "Ada Lovelace", "born": 1815, "city": "London"}']),
            ("Grace Hopper, born 1906 in New York", ['{"name": "Grace Hopper", "born": 1906, "city": "New York"}'])]
    result = retrieval_baseline(_cfg("extraction"), _generation_data("extraction", train, test))
    assert result.metrics["json_valid"] == 1.0 and result.metrics["json_exact_match"] == 0.5
    assert result.metrics["json_f1"] == pytest.approx(3 / 6)  # 3 of 6 reference fields, 3 of 6 predicted
    assert result.example_scores() == [1.0, 0.0] and result.example_correct() == [True, False]
