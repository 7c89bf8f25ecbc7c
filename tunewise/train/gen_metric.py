"""Metrics of generated val answers during training, so that `train.early_stopping.metric` (and the best
checkpoint) can be ROUGE-L, BLEU, the slot error rate, JSON field F1 or a user metric, not only the
teacher-forced loss. At each evaluation the first `max_generate` distinct val inputs are answered by greedy
decoding and scored with the same definitions evaluation uses (tunewise.metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.config import RunConfig
from tunewise.data.encode import encode_prompt
from tunewise.data.prompt import fine_tuned_labels, prompt_messages
from tunewise.data.records import Record, group_references
from tunewise.metrics import SlotChecker, TrainingMetric, score_generated, training_metric
from tunewise.metrics.extraction import load_schema
from tunewise.train.callbacks import answer_metrics
from tunewise.train.decode import greedy_decode


@dataclass
class ValAnswers:
    """The val inputs answered at each evaluation, with what scoring them needs."""

    metric: TrainingMetric
    prompts: list[list[int]]  # encoded as evaluation and serving encode the fine-tuned model's prompt
    references: list[list[str]]  # every val answer to the input
    inputs: list[str]
    max_new_tokens: int
    slots: SlotChecker | None = None
    schema: dict | None = None


def val_answers(cfg: RunConfig, train: list[Record], val: list[Record], labels: list[str] | None, tokenizer
                ) -> ValAnswers | None:
    """None when the configured metric needs no generation (eval_loss, eval_answer_exact_match) or there is
    no val split."""
    metric = training_metric(cfg.train.early_stopping.metric, cfg.task.type)
    if not metric.generated or not val:
        return None
    grouped = group_references(val)[: cfg.train.early_stopping.max_generate]
    prompt_labels = fine_tuned_labels(cfg.task, labels)
    prompts = [encode_prompt(tokenizer, prompt_messages(r, cfg.task, prompt_labels)) for r in grouped]
    refs = [r.all_references for r in grouped]
    longest = max(len(tokenizer(x, add_special_tokens=False)["input_ids"]) for rs in refs for x in rs)
    slots = (SlotChecker.from_inputs(r.input_text for r in [*train, *val])
             if metric.name == "slot_error_rate" else None)
    schema = load_schema(cfg.task.json_schema) if cfg.task.type == "extraction" else None
    # Room for a little more than the longest reference: a model that rambles is cut off, not waited for.
    new_tokens = cfg.eval.max_new_tokens or longest + 16
    return ValAnswers(metric=metric, prompts=prompts, references=refs, inputs=[r.input_text for r in grouped],
                      max_new_tokens=new_tokens, slots=slots, schema=schema)


class GeneratedMetric:
    """Trainer's compute_metrics: the teacher-forced answer exact match, plus the configured metric of
    greedily generated val answers. `trainer` is set once the Trainer exists (it is the Trainer's own
    compute_metrics, so it is built first)."""

    def __init__(self, val: ValAnswers, tokenizer, batch_size: int):
        self.val, self.tokenizer, self.batch_size = val, tokenizer, batch_size
        self.trainer = None

    def __call__(self, pred) -> dict[str, float]:
        out = answer_metrics(pred)
        v = self.val
        texts = greedy_decode(self.trainer.model, self.tokenizer, v.prompts, v.max_new_tokens, self.batch_size,
                              desc="val answers").texts
        value = score_generated(v.metric.name, texts, v.references, v.inputs, v.slots, v.schema)
        out[v.metric.key.removeprefix("eval_")] = value
        return out
