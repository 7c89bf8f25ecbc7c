"""`tunewise tune`: hyperparameter search with Optuna (TPE sampler, median pruning, SQLite storage).

Each trial is a normal training run under `<run>/tune/<name>-trial-N/`; the study lives in `<run>/tune/study.db`,
so an interrupted search continues where it stopped, and the best trial's config is written to `best.yaml`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from tunewise.config import RunConfig, TuneParam, dump_config, parse_config
from tunewise.data import PreparedData
from tunewise.errors import ConfigError, DataError
from tunewise.models import ResolvedModel
from tunewise.train import train


@dataclass
class TuneResult:
    best_value: float
    best_params: dict
    best_config: Path
    trials: int
    pruned: int
    storage: str


class PruneOnEval(TrainerCallback):
    """Reports every evaluation to Optuna and stops a trial the median pruner gives up on."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna  # heavy

        if metrics and self.metric in metrics:
            self.trial.report(metrics[self.metric], state.global_step)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"{self.metric}={metrics[self.metric]:.4f} at step {state.global_step}")


def _suggest(trial, key: str, p: TuneParam, current):
    if p.choices is not None:
        return trial.suggest_categorical(key, p.choices)
    if isinstance(current, int) and not isinstance(current, bool):
        return trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(key, p.low, p.high, log=p.log)


def trial_config(cfg: RunConfig, trial, out_dir: Path) -> RunConfig:
    raw = cfg.model_dump(mode="json")
    for key, param in cfg.tune.space.items():
        *parents, leaf = key.split(".")
        node = raw["train"]
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"config: tune.space.{key}: not a train.* setting")
        node[leaf] = _suggest(trial, key, param, node[leaf])
    raw.update(name=f"{cfg.name}-trial-{trial.number}", output_dir=str(out_dir))
    return parse_config(raw, f"tune trial {trial.number}")


def _best(log_history: list[dict], metric: str, maximize: bool) -> float:
    values = [h[metric] for h in log_history if metric in h]
    return max(values) if maximize else min(values)


def tune(cfg: RunConfig, data: PreparedData, base: ResolvedModel) -> TuneResult:
    import optuna  # heavy

    if not data.val:
        raise DataError("tune needs a validation split (data.split.val > 0)")
    out = cfg.run_dir / "tune"
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    metric, maximize = cfg.tune.metric, cfg.tune.metric != "eval_loss"
    study = optuna.create_study(
        study_name=cfg.name, storage=storage, load_if_exists=True,
        direction="maximize" if maximize else "minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))

    def objective(trial) -> float:
        tcfg = trial_config(cfg, trial, out)
        result = train(tcfg, data, base, callbacks=[PruneOnEval(trial, metric)])
        history = json.loads((tcfg.run_dir / "train_log.json").read_text())
        del result.model  # free the trial's weights before the next one loads
        return _best(history, metric, maximize)

    finished = [t for t in study.trials if t.state.is_finished()]
    study.optimize(objective, n_trials=max(0, cfg.tune.trials - len(finished)), gc_after_trial=True)
    best = study.best_trial
    best_cfg = trial_config(cfg, optuna.trial.FixedTrial(best.params, best.number), cfg.output_dir)
    best_cfg = best_cfg.model_copy(update={"name": cfg.name + "-best"})
    path = out / "best.yaml"
    dump_config(best_cfg, path)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return TuneResult(best.value, best.params, path, len(study.trials), pruned, storage)
