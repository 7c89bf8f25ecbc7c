"""Evaluation stage: baselines (zero-shot, few-shot, classical) and the fine-tuned model on the held-out
test split, with bootstrap CIs, paired comparisons, inference cost, a forgetting check and a verdict.

Entry points: `run_baselines(...)` (before training: it needs the untouched base model), then
`evaluate(...) -> EvalResult`. `score_model(...)` scores one fine-tuned model alone, e.g. for a registry's gated
promotion; `compare_systems(a, b, metric)` is the paired bootstrap between two such results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data import DataCard, PreparedData
from tunewise.data.prompt import fine_tuned_labels
from tunewise.evaluate.classical import classical_baseline, retrieval_baseline
from tunewise.evaluate.compare import compare_systems, confidence_intervals, resample_indices
from tunewise.evaluate.forgetting import ForgettingResult, check_forgetting
from tunewise.evaluate.metrics import per_class
from tunewise.evaluate.results import HEADLINE, SECONDARY, Comparison, SystemResult
from tunewise.evaluate.shots import choose_shots, resolve_selection, similar_shots, tfidf_shots
from tunewise.evaluate.systems import score_llm
from tunewise.evaluate.verdict import Verdict, make_verdict
from tunewise.models import ResolvedModel, has_adapter, load_model, load_tokenizer, load_weights

__all__ = [
    "Comparison",
    "EvalResult",
    "SystemResult",
    "compare_systems",
    "evaluate",
    "load_fine_tuned",
    "run_baselines",
    "score_model",
    "summarize",
]


@dataclass
class EvalResult:
    task: str
    systems: dict[str, SystemResult]
    ci: dict[str, dict[str, tuple[float, float]]]
    comparisons: list[Comparison]
    forgetting: ForgettingResult | None
    verdict: Verdict
    confidence: float
    resamples: int

    def metrics_json(self) -> dict:
        """metrics.json: `test` maps system → metric → float; everything else sits in other keys."""
        out = {"task": self.task,
               "test": {n: s.metrics for n, s in self.systems.items()},
               "ci": {n: {m: list(v) for m, v in c.items()} for n, c in self.ci.items()},
               "confidence": self.confidence, "bootstrap_resamples": self.resamples,
               "inference": {n: s.inference_json() for n, s in self.systems.items()},
               "comparisons": [c.to_json() for c in self.comparisons],
               "forgetting": self.forgetting.to_json() if self.forgetting else None,
               "verdict": self.verdict.to_json()}
        if self.task == "classification":
            details = {n: per_class(s.predictions, s.references, s.labels or []) for n, s in self.systems.items()}
            out["per_class"] = {n: d["per_class"] for n, d in details.items()}
            out["confusion"] = {n: d["confusion"] for n, d in details.items()}
        return out


def run_baselines(cfg: RunConfig, data: PreparedData, base: ResolvedModel, model=None) -> dict[str, SystemResult]:
    tokenizer = load_tokenizer(base.path)
    model = model if model is not None else load_model(base.path)
    results = {"zero_shot": score_llm("zero_shot", cfg, data, model, tokenizer, prompt_labels=data.labels)}
    k = cfg.eval.few_shot_k
    if k > 0 and data.train:
        selection = resolve_selection(cfg.eval.few_shot_selection, cfg.task.type)
        if selection == "similar":
            shots = similar_shots(data.train, data.test, k)
        elif selection == "tfidf":
            shots = tfidf_shots(data.train, data.test, k)
        else:
            shots = [choose_shots(data.train, k, data.labels, cfg.seed)] * len(data.test)
        results["few_shot"] = score_llm("few_shot", cfg, data, model, tokenizer, shots, data.labels)
        results["few_shot"].extra.update(k=min(k, len(data.train)), selection=selection)
    if cfg.eval.classical and data.train:
        results["classical"] = (classical_baseline(data, cfg.seed, cfg.estimate.prices)
                                if cfg.task.type == "classification" else retrieval_baseline(cfg, data)
                                ).add_user_metrics(cfg.eval.metrics)
    return results


def load_fine_tuned(base: ResolvedModel, weights: Path, base_model=None):
    """The fine-tuned model from `weights`: a PEFT adapter folder (put on the base; `base_model`, if already
    loaded, is reused and modified) or a full fine-tuned model folder, safetensors only either way."""
    return load_weights(weights, base.path, base_model=base_model)


def score_model(cfg: RunConfig, data: PreparedData, base: ResolvedModel, weights: Path, model=None,
                name: str = "fine_tuned") -> SystemResult:
    """Score one fine-tuned model (`weights`: its adapter or full-model folder) on the test split, per-example
    scores included. `model` may be the in-memory model training returned."""
    model = model if model is not None else load_fine_tuned(base, weights)
    return score_llm(name, cfg, data, model, load_tokenizer(base.path),
                     prompt_labels=fine_tuned_labels(cfg.task, data.labels))


def summarize(cfg: RunConfig, systems: dict[str, SystemResult], forgetting: ForgettingResult | None = None,
              card: DataCard | None = None) -> EvalResult:
    """CIs for every metric of every system, fine-tuned vs each baseline on the headline metrics, verdict (on
    the metric the data card's audit recommends, when it has one)."""
    task = cfg.task.type
    n = len(next(iter(systems.values())).references)
    idx = resample_indices(n, cfg.eval.bootstrap_resamples, cfg.seed)
    ci = {name: confidence_intervals(s, idx) for name, s in systems.items()}
    metrics = [*HEADLINE[task], *(m for m in SECONDARY if all(m in s.metrics for s in systems.values()))]
    comparisons = [compare_systems(systems["fine_tuned"], s, m, idx=idx)
                   for name, s in systems.items() if name != "fine_tuned" and "fine_tuned" in systems
                   for m in metrics]
    labels = card.labels if card is not None else {}
    verdict = make_verdict(systems, comparisons, forgetting, metric=labels.get("recommended_metric"),
                           metric_reason=labels.get("metric_reason"))
    return EvalResult(task=task, systems=systems, ci=ci, comparisons=comparisons, forgetting=forgetting,
                      verdict=verdict, confidence=0.95, resamples=cfg.eval.bootstrap_resamples)


def evaluate(cfg: RunConfig, data: PreparedData, base: ResolvedModel, weights: Path,
             baselines: dict[str, SystemResult], model=None, base_model=None) -> EvalResult:
    """Score the fine-tuned model (`weights`: its adapter or full-model folder), check forgetting against its
    base, and compare with the baselines. `base_model`: the base, for the forgetting check of a model with no
    adapter to switch off."""
    model = model if model is not None else load_fine_tuned(base, weights)
    tokenizer = load_tokenizer(base.path)
    systems = {**baselines, "fine_tuned": score_llm("fine_tuned", cfg, data, model, tokenizer,
                                                    prompt_labels=fine_tuned_labels(cfg.task, data.labels))}
    systems["fine_tuned"].extra["method"] = cfg.train.method
    forgetting = None
    if cfg.eval.forgetting.enabled:
        # A non-PEFT model (full fine-tuning) has no adapter to switch off: load the base beside it.
        if has_adapter(model):
            base_model = None
        elif base_model is None:
            base_model = load_model(base.path)
        forgetting = check_forgetting(cfg.eval.forgetting, model, tokenizer, base_model,
                                      cfg.eval.score_tokens_per_batch)
    return summarize(cfg, systems, forgetting, data.card)
