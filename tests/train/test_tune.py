"""Optuna search on the tiny model: SQLite study, reported evaluations, best config written and loadable."""

import optuna

from tests.train.conftest import tiny_config, tiny_data
from tunewise.config import load_config
from tunewise.train.tune import tune


def test_tune_writes_the_best_trials_config_and_resumes_the_study(tmp_path, tiny_base):
    cfg = tiny_config(tmp_path, eval_steps=3)
    raw = cfg.model_dump(mode="json")
    raw["tune"] = {"trials": 3, "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                                         "lora.r": {"choices": [2, 4]}}}
    cfg = type(cfg).model_validate(raw)
    result = tune(cfg, tiny_data(), tiny_base)
    assert result.trials == 3 and (cfg.run_dir / "tune" / "study.db").is_file()
    study = optuna.load_study(study_name=cfg.name, storage=result.storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.intermediate_values for t in study.trials)  # every evaluation reached the pruner
    assert result.best_value == min(t.value for t in finished)
    best = load_config(result.best_config)
    assert best.train.learning_rate == result.best_params["learning_rate"]
    assert best.train.lora.r == result.best_params["lora.r"] and isinstance(best.train.lora.r, int)
    assert best.name == "t-best" and best.output_dir == cfg.output_dir

    more = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"trials": 4})})
    assert tune(more, tiny_data(), tiny_base).trials == 4  # continues the stored study, does not restart
