"""Evaluation stage: baselines (zero-shot, few-shot) and the fine-tuned model on the held-out test split.
Entry points: `run_baselines(...)` before training and `evaluate(...)` after; both return SystemResults."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data import PreparedData
from tunewise.data.prompt import fine_tuned_labels, prompt_messages
from tunewise.data.records import Record
from tunewise.evaluate.generate import generate
from tunewise.evaluate.metrics import classification_metrics, generation_metrics, parse_label
from tunewise.models import ResolvedModel, load_model, load_tokenizer

@dataclass
class SystemResult:
    name: str
    metrics: dict[str, float]
    outputs: list[str]  # raw generated text, one per test example
    predictions: list[str]  # parsed label (classification) or the text itself
    prompt_tokens_per_request: float
    generated_tokens_per_request: float
    seconds: float
    extra: dict = field(default_factory=dict)

    def inference_json(self) -> dict:
        n = max(1, len(self.outputs))
        return {"prompt_tokens_per_request": self.prompt_tokens_per_request,
                "generated_tokens_per_request": self.generated_tokens_per_request,
                "seconds_per_request": self.seconds / n, **self.extra}


def choose_shots(train: list[Record], k: int, labels: list[str] | None, seed: int) -> list[Record]:
    """k training examples; for classification, round-robin over labels so every class is shown."""
    rng = random.Random(seed)
    if k <= 0 or not train:
        return []
    if not labels:
        return rng.sample(train, min(k, len(train)))
    by_label = {lab: [r for r in train if r.label == lab] for lab in labels}
    for pool in by_label.values():
        rng.shuffle(pool)
    shots, i = [], 0
    while len(shots) < k and any(by_label.values()):
        pool = by_label[labels[i % len(labels)]]
        if pool:
            shots.append(pool.pop())
        i += 1
    rng.shuffle(shots)
    return shots


def max_new_tokens(cfg: RunConfig, tokenizer, labels: list[str] | None) -> int:
    if cfg.eval.max_new_tokens:
        return cfg.eval.max_new_tokens
    if labels:
        # Room for a chatty "The topic of this article is politics." too: a base model that answers in a
        # sentence should be parsed, not cut off and scored as invalid.
        return max(len(tokenizer(lab, add_special_tokens=False)["input_ids"]) for lab in labels) + 14
    return 128


def score_system(name: str, cfg: RunConfig, data: PreparedData, model, tokenizer, shots=(),
                 prompt_labels: list[str] | None = None) -> SystemResult:
    """`prompt_labels`: the label list shown in the prompt (baselines: all labels; fine-tuned: see
    fine_tuned_labels). Answers are always parsed against the full label set."""
    prompts = [prompt_messages(r, cfg.task, prompt_labels, shots) for r in data.test]
    gens = generate(model, tokenizer, prompts, max_new_tokens(cfg, tokenizer, data.labels),
                    cfg.eval.batch_size, desc=name)
    refs = [r.answer for r in data.test]
    if cfg.task.type == "classification":
        preds = [parse_label(t, data.labels) for t in gens.texts]
        metrics = classification_metrics(preds, refs, data.labels)
    else:
        preds = gens.texts
        metrics = generation_metrics(preds, refs)
    n = max(1, len(prompts))
    return SystemResult(name, metrics, gens.texts, preds, sum(gens.prompt_tokens) / n,
                        sum(gens.generated_tokens) / n, gens.seconds)


def run_baselines(cfg: RunConfig, data: PreparedData, base: ResolvedModel, model=None) -> dict[str, SystemResult]:
    tokenizer = load_tokenizer(base.path)
    model = model if model is not None else load_model(base.path)
    shots = choose_shots(data.train, cfg.eval.few_shot_k, data.labels, cfg.seed)
    results = {"zero_shot": score_system("zero_shot", cfg, data, model, tokenizer, prompt_labels=data.labels)}
    if shots:
        results["few_shot"] = score_system("few_shot", cfg, data, model, tokenizer, shots, data.labels)
        results["few_shot"].extra["k"] = len(shots)
    return results


def evaluate_fine_tuned(cfg: RunConfig, data: PreparedData, base: ResolvedModel, adapter_dir: Path,
                        model=None) -> SystemResult:
    """Score the fine-tuned model. `model` may be the in-memory PEFT model training returned."""
    from peft import PeftModel

    tokenizer = load_tokenizer(base.path)
    if model is None:
        model = PeftModel.from_pretrained(load_model(base.path), adapter_dir)
    return score_system("fine_tuned", cfg, data, model, tokenizer,
                        prompt_labels=fine_tuned_labels(cfg.task, data.labels))
