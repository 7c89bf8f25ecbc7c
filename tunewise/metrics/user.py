"""User metrics named in the config as `module:function` or `path/to/file.py:function`: a Python callable
`(predictions: list[str], references: list[str]) -> float`, scored beside the built-in metrics with bootstrap
CIs (the function is called once per resample of the test set). Higher is better unless the function has an
attribute `higher_is_better = False`.

The code runs in this process with the user's permissions: it is the user's own code, named in their own
config, exactly like a Python file they run themselves."""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from tunewise.errors import ConfigError

UserMetric = Callable[[list[str], list[str]], float]
SPEC = re.compile(r"^(?P<module>[\w./\\-]+(?:\.py)?):(?P<function>[A-Za-z_]\w*)$")


def is_user_metric(name: str) -> bool:
    return bool(SPEC.match(name))


def metric_key(spec: str) -> str:
    """The metric's name in results: the spec with `:` as `.` (MLflow refuses `:` in metric names), the file
    form without its folder and suffix: `my_metrics.py:recall` → `my_metrics.recall`."""
    m = SPEC.match(spec)
    if not m:
        return spec
    module = m["module"]
    if module.endswith(".py"):
        module = Path(module).stem
    return f"{module}.{m['function']}"


def _module(name: str):
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"eval.metrics: {name}: file not found")
        spec = importlib.util.spec_from_file_location(f"tunewise_user_metric_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(f"eval.metrics: cannot import {name!r} ({err}); name a module on the Python path or a "
                          "file: path/to/metrics.py:function") from None


@cache  # one import per process: resampling calls this for every system
def load_metric(spec: str) -> UserMetric:
    """The callable `spec` names, or a ConfigError saying why not."""
    m = SPEC.match(spec)
    if not m:
        raise ConfigError(f"eval.metrics: {spec!r} is neither a built-in metric nor module:function")
    fn = getattr(_module(m["module"]), m["function"], None)
    if not callable(fn):
        raise ConfigError(f"eval.metrics: {spec}: {m['module']} has no function {m['function']!r}")
    return fn


def higher_is_better(spec: str) -> bool:
    return bool(getattr(load_metric(spec), "higher_is_better", True))


def call_metric(fn: UserMetric, spec: str, predictions: list[str], references: list[str]) -> float:
    value = fn(list(predictions), list(references))
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"eval.metrics: {spec} returned {type(value).__name__}, not a number") from None
    if math.isnan(value):
        raise ConfigError(f"eval.metrics: {spec} returned NaN")
    return value


def resampled_user(spec: str, predictions: list[str], references: list[str], idx: np.ndarray) -> np.ndarray:
    """The user metric on every resample (row of test-example indices)."""
    fn = load_metric(spec)
    return np.array([call_metric(fn, spec, [predictions[i] for i in row], [references[i] for i in row])
                     for row in idx])
