"""User metrics (module:function) load by module name or file, and are re-run on every resample."""

import numpy as np
import pytest

from tests.metrics import user_metrics
from tunewise.errors import ConfigError
from tunewise.metrics.user import higher_is_better, load_metric, metric_key, resampled_user

PREDS, REFS = ["a b", "a b c d", "x"], ["a b c d", "a b", "x"]


def test_loads_by_module_and_by_file():
    assert load_metric("tests.metrics.user_metrics:mean_length_ratio") is user_metrics.mean_length_ratio
    by_file = load_metric(f"{user_metrics.__file__}:mean_length_ratio")
    assert by_file(PREDS, REFS) == pytest.approx((0.5 + 2 + 1) / 3)
    assert metric_key("tests.metrics.user_metrics:errors") == "tests.metrics.user_metrics.errors"
    assert metric_key("/some/where/my_metrics.py:recall") == "my_metrics.recall"
    assert higher_is_better("tests.metrics.user_metrics:mean_length_ratio")
    assert not higher_is_better("tests.metrics.user_metrics:errors")


def test_each_resample_is_scored_by_calling_the_function_on_it():
    idx = np.array([[0, 0, 2], [1, 1, 1]])
    got = resampled_user("tests.metrics.user_metrics:mean_length_ratio", PREDS, REFS, idx)
    assert got == pytest.approx([(0.5 + 0.5 + 1) / 3, 2.0])


def test_bad_specs_are_config_errors():
    with pytest.raises(ConfigError, match="cannot import"):
        load_metric("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        load_metric("tests.metrics.user_metrics:nope")
    with pytest.raises(ConfigError, match="not a number"):
        resampled_user("tests.metrics.user_metrics:not_a_number", PREDS, REFS, np.array([[0, 1, 2]]))
    with pytest.raises(ConfigError, match="file not found"):
        load_metric("missing_file.py:f")
