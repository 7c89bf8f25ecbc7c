"""Score one LLM system (a model + a prompt recipe) on the test split: its answers, metrics, per-example
scores and measured inference cost."""

from __future__ import annotations

from tunewise.config import RunConfig
from tunewise.data import PreparedData
from tunewise.data.encode import encode_prompt
from tunewise.data.prompt import prompt_messages
from tunewise.data.records import Record
from tunewise.evaluate.cost import detect_device, inference_cost
from tunewise.evaluate.generate import generate
from tunewise.evaluate.metrics import (
    answer_scoring,
    classification_metrics,
    generation_examples,
    generation_metrics,
    parse_label,
)
from tunewise.evaluate.results import SystemResult
from tunewise.evaluate.score import answer_ids, score_continuations, score_labels


def max_new_tokens(cfg: RunConfig, tokenizer, labels: list[str] | None) -> int:
    if cfg.eval.max_new_tokens:
        return cfg.eval.max_new_tokens
    if labels:
        # Room for a chatty "The topic of this article is politics." too: a base model that answers in a
        # sentence should be parsed, not cut off and scored as invalid.
        return max(len(tokenizer(lab, add_special_tokens=False)["input_ids"]) for lab in labels) + 14
    return 128


def _warm_up(model, tokenizer, prompt: list[dict[str, str]]) -> None:
    # The first call pays one-off costs (allocator, kernel selection, thread pools); without this, whichever
    # system is measured first looks several times more expensive than it is.
    generate(model, tokenizer, [prompt], max_new_tokens=2, batch_size=1, desc="warm-up")


def _classify(cfg: RunConfig, data: PreparedData, model, tokenizer, prompts, name: str):
    """(outputs, predictions, prompt tokens, generated tokens, seconds) for a classification system."""
    labels = data.labels or []
    if cfg.eval.classification_mode == "score":
        best, scored = score_labels(model, tokenizer, prompts, labels, cfg.eval.score_tokens_per_batch,
                                    cfg.eval.batch_size, desc=name)
        return best, best, scored.prompt_tokens, [0] * len(best), scored.seconds
    gens = generate(model, tokenizer, prompts, max_new_tokens(cfg, tokenizer, labels), cfg.eval.batch_size,
                    desc=name)
    preds = [parse_label(t, labels) for t in gens.texts]
    return gens.texts, preds, gens.prompt_tokens, gens.generated_tokens, gens.seconds


def score_llm(name: str, cfg: RunConfig, data: PreparedData, model, tokenizer,
              shots: list[list[Record]] | None = None, prompt_labels: list[str] | None = None) -> SystemResult:
    """`shots[i]`: the few-shot examples shown before test example i (none for zero-shot and fine-tuned).
    `prompt_labels`: the label list the prompt shows (baselines: all labels; fine-tuned: fine_tuned_labels).
    Answers are always parsed, or scored, against the full label set."""
    shots = shots or [[] for _ in data.test]
    prompts = [prompt_messages(r, cfg.task, prompt_labels, s) for r, s in zip(data.test, shots)]
    refs = [r.answer for r in data.test]
    extra: dict = {}
    if prompts:
        _warm_up(model, tokenizer, prompts[0])
    if cfg.task.type == "classification":
        outputs, preds, prompt_tokens, gen_tokens, seconds = _classify(cfg, data, model, tokenizer, prompts, name)
        examples: dict = {}
        metrics = classification_metrics(preds, refs, data.labels or [])
        extra["classification_mode"] = cfg.eval.classification_mode
    else:
        gens = generate(model, tokenizer, prompts, max_new_tokens(cfg, tokenizer, None), cfg.eval.batch_size,
                        desc=name)
        outputs = preds = gens.texts
        prompt_tokens, gen_tokens, seconds = gens.prompt_tokens, gens.generated_tokens, gens.seconds
        all_refs = [r.all_references for r in data.test]
        examples = generation_examples(preds, all_refs, [r.input_text for r in data.test], answer_scoring(cfg, data))
        if cfg.eval.perplexity:
            # Perplexity is a model property, not a serving cost: its time is not added to `seconds`.
            examples["nll"], examples["answer_tokens"] = reference_nll(cfg, model, tokenizer, prompts, all_refs)
        metrics = generation_metrics(examples)
    prices = cfg.estimate.prices
    cost = inference_cost(prompt_tokens, gen_tokens, seconds, detect_device(prices), prices)
    result = SystemResult(name=name, task=cfg.task.type, metrics=metrics, outputs=outputs, predictions=preds,
                          references=refs, labels=data.labels, examples=examples, inference=cost, extra=extra)
    return result.add_user_metrics(cfg.eval.metrics)


def reference_nll(cfg: RunConfig, model, tokenizer, prompts: list[list[dict[str, str]]],
                  references: list[list[str]]) -> tuple[list[float], list[int]]:
    """Per example: NLL (nats) and token count of all its references together, so perplexity is per reference
    token over every reference. Each prompt runs once; its references continue it from the cached prompt (E2E:
    630 prompts for 4,693 references, and a few-shot prompt is ~500 tokens)."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    conts = [[answer_ids(tokenizer, p, r) for r in refs] for p, refs in zip(prompts, references)]
    scored = score_continuations(model, encoded, conts, tokenizer.pad_token_id, cfg.eval.score_tokens_per_batch,
                                 cfg.eval.batch_size, desc="perplexity")
    return [-sum(s) for s in scored.logprobs], [sum(n) for n in scored.lengths]
