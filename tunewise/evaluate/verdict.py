"""The verdict: does the fine-tune beat the best cheap alternative, at what cost, and without forgetting?

It is decided on one metric: the one the data audit recommends (macro-F1 when the classes are imbalanced,
accuracy otherwise), or the task's first headline metric when there is no recommendation (generation,
extraction)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tunewise.evaluate.classical import RETRIEVAL
from tunewise.evaluate.forgetting import ForgettingResult
from tunewise.evaluate.results import HEADLINE, Comparison, SystemResult

NAMES = {"zero_shot": "zero-shot", "few_shot": "few-shot", "classical": "TF-IDF + logistic regression",
         "fine_tuned": "the fine-tuned model"}
METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "rouge_l": "ROUGE-L", "bleu": "BLEU",
                "json_f1": "JSON field F1", "json_valid": "valid-JSON rate"}


@dataclass
class Verdict:
    ship: bool
    text: str
    reasons: list[str]  # why not, when ship is False
    best_baseline: str | None
    metric: str | None = None  # the metric the decision was made on

    def to_json(self) -> dict:
        return asdict(self)


def system_name(s: SystemResult) -> str:
    if s.name == "classical" and s.task != "classification":
        return RETRIEVAL
    return NAMES.get(s.name, s.name)


def _dollars(s: SystemResult) -> str:
    d = s.inference.dollars_per_1k_requests
    return "an unknown price" if d is None else f"${d:.3g}"


def _cost_sentence(ft: SystemResult, systems: dict[str, SystemResult]) -> str:
    other = systems.get("few_shot") or systems.get("zero_shot")
    text = (f"It costs {_dollars(ft)} per 1,000 requests on {ft.inference.device} "
            f"({ft.inference.prompt_tokens_per_request:.0f} prompt tokens per request)")
    if other is not None:
        text += (f" against {_dollars(other)} for {system_name(other)} "
                 f"({other.inference.prompt_tokens_per_request:.0f} prompt tokens)")
    return text + "."


def _forgetting_sentence(f: ForgettingResult | None) -> str:
    if f is None:
        return "Forgetting was not checked."
    lo, hi = f.difference_ci
    return (f"Forgetting: general multiple-choice accuracy {f.base_accuracy:.3f} → {f.tuned_accuracy:.3f} "
            f"({f.tuned_accuracy - f.base_accuracy:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}, {f.questions} questions), "
            f"KL from the base model {f.mean_kl:.3g} nats/token.")


def make_verdict(systems: dict[str, SystemResult], comparisons: list[Comparison],
                 forgetting: ForgettingResult | None, confidence: float = 0.95, metric: str | None = None,
                 metric_reason: str | None = None) -> Verdict:
    """`metric`: the data audit's recommendation (one of the task's headline metrics); None: the first one."""
    ft = systems.get("fine_tuned")
    baselines = {n: s for n, s in systems.items() if n != "fine_tuned"}
    if ft is None or not baselines:
        return Verdict(False, "No verdict: it needs a fine-tuned model and at least one baseline.",
                       ["nothing to compare"], None)
    if metric is not None and metric not in HEADLINE[ft.task]:
        raise ValueError(f"verdict metric {metric!r}: not a headline metric of {ft.task} ({HEADLINE[ft.task]})")
    metric = metric or HEADLINE[ft.task][0]
    best = max(baselines, key=lambda n: baselines[n].metrics[metric])
    comp = next(c for c in comparisons if c.a == "fine_tuned" and c.b == best and c.metric == metric)
    lo, hi = comp.ci
    level = f"{confidence:.0%} CI"
    name = METRIC_NAMES.get(metric, metric)
    why = f" (the verdict's metric: {metric_reason})" if metric_reason else ""
    best_name = system_name(baselines[best])
    text = (f"The fine-tuned model scores {name} {ft.metrics[metric]:.3f}{why} "
            f"against {baselines[best].metrics[metric]:.3f} "
            f"for the best baseline ({best_name}): {comp.difference:+.3f} ({level} {lo:+.3f} to "
            f"{hi:+.3f}, paired bootstrap p = {comp.p_value:.3f}). ")
    if "slot_error_rate" in ft.metrics and "slot_error_rate" in baselines[best].metrics:
        text += (f"Slot error rate {ft.metrics['slot_error_rate']:.3f} against "
                 f"{baselines[best].metrics['slot_error_rate']:.3f}. ")
    text += _cost_sentence(ft, systems) + " " + _forgetting_sentence(forgetting)
    reasons = []
    if lo <= 0:
        reasons.append(f"it does not beat {best_name} on {name} beyond chance "
                       f"(the {level} of the difference reaches {lo:+.3f})")
    if forgetting is not None and forgetting.flagged:
        reasons.extend(forgetting.reasons)
    ship = not reasons
    text += " → ship." if ship else " → don't ship, because " + "; and ".join(reasons) + "."
    return Verdict(ship, text, reasons, best, metric)
