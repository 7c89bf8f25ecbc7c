from tunewise.data import prepare
from tunewise.evaluate.classical import classical_baseline
from tunewise.testing import tiny_config


def test_tfidf_logistic_regression_learns_separable_topics(tmp_path, tiny_model_dir):
    data = prepare(tiny_config(tmp_path, tiny_model_dir))
    result = classical_baseline(data, seed=0)
    assert result.metrics["accuracy"] == 1.0  # the tiny topics share no words: a linear model must get them
    assert result.inference.device == "CPU" and result.inference.dollars_per_1k_requests >= 0
    assert len(result.predictions) == len(data.test)
