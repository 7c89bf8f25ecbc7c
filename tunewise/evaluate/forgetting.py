"""Forgetting check: general ability before vs after fine-tuning, on data unrelated to the task.

(a) a multiple-choice set (JSONL: question, choices, answer) scored by log-likelihood of each choice; a drop
is flagged when the paired-bootstrap 95 % CI of (tuned − base) accuracy lies entirely below 0 and the drop is
larger than `max_drop` (see `drop_flagged`);
(b) the KL divergence between the base and the fine-tuned next-token distributions on general prompts.
Both ship as sets written for tunewise (general_mc.jsonl, built by general_mc_build.py; general_prompts.jsonl);
users can pass their own. The base model is the fine-tuned PEFT model with its adapter switched off, so one model in
memory serves both sides."""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tunewise.config import ForgettingConfig
from tunewise.data.encode import encode_prompt
from tunewise.errors import DataError
from tunewise.evaluate.compare import paired_bootstrap
from tunewise.evaluate.score import answer_ids, score_continuations
from tunewise.models import base_weights, has_adapter


@dataclass
class MCQuestion:
    question: str
    choices: list[str]
    answer: int


@dataclass
class ForgettingResult:
    mc_source: str
    questions: int
    base_accuracy: float
    tuned_accuracy: float
    relative_drop: float  # (base − tuned) / base; negative = improved
    difference_ci: tuple[float, float]  # paired bootstrap 95 % CI of tuned − base accuracy
    kl_source: str
    kl_prompts: int
    mean_kl: float  # nats per answer token, KL(base ‖ fine-tuned)
    flagged: bool
    reasons: list[str]

    def to_json(self) -> dict:
        return {**asdict(self), "difference_ci": list(self.difference_ci)}


def shipped(name: str) -> Path:
    return Path(str(importlib.resources.files("tunewise") / "evaluate" / name))


def _jsonl(path: Path):
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, row


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {key}: expected non-empty text")
    return value


def load_mc(path: Path) -> list[MCQuestion]:
    """Read {question, choices: [≥2 texts], answer: a choice's text or its 0-based index} per line."""
    out = []
    for lineno, row in _jsonl(path):
        where = f"{path}:{lineno}"
        question, choices, answer = _text(row, "question", where), row.get("choices"), row.get("answer")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip()
                                                                         for c in choices):
            raise DataError(f"{where}: choices: expected a list of at least two non-empty texts")
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
            index = answer
        elif isinstance(answer, str) and answer in choices:
            index = choices.index(answer)
        else:
            raise DataError(f"{where}: answer: must be one of the choices or its index 0..{len(choices) - 1}")
        out.append(MCQuestion(question, choices, index))
    if not out:
        raise DataError(f"{path}: no questions")
    return out


def load_prompts(path: Path) -> list[tuple[str, str]]:
    """Read {prompt, response} per line: the KL is measured over the response's tokens."""
    out = [(_text(r, "prompt", f"{path}:{n}"), _text(r, "response", f"{path}:{n}")) for n, r in _jsonl(path)]
    if not out:
        raise DataError(f"{path}: no prompts")
    return out


def mc_tokens(tokenizer, questions: list[MCQuestion]) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Each question's prompt tokens and its choices' answer-turn tokens (end-of-turn included)."""
    msgs = [[{"role": "user", "content": f"{q.question}\nAnswer with one of: {', '.join(q.choices)}."}]
            for q in questions]
    conts = [[answer_ids(tokenizer, m, c) for c in q.choices] for m, q in zip(msgs, questions)]
    return [encode_prompt(tokenizer, m) for m in msgs], conts


def mc_choices(model, tokenizer, questions: list[MCQuestion], max_tokens: int = 2048) -> list[int]:
    """Per question, the index of the most likely choice (full answer turn, end-of-turn included)."""
    prompts, conts = mc_tokens(tokenizer, questions)
    scored = score_continuations(model, prompts, conts, tokenizer.pad_token_id, max_tokens,
                                 desc="forgetting: multiple choice")
    return [max(range(len(s)), key=s.__getitem__) for s in scored.logprobs]


def mc_correct(model, tokenizer, questions: list[MCQuestion], max_tokens: int = 2048) -> list[float]:
    """1/0 per question: is the most likely choice the right one?"""
    return [float(c == q.answer) for c, q in zip(mc_choices(model, tokenizer, questions, max_tokens), questions)]


@torch.no_grad()
def _answer_logprobs(model, batch: list[tuple[list[int], list[int]]], pad: int) -> list[torch.Tensor]:
    """Log-distributions at the positions that predict each answer token: [len(answer), vocab] per item."""
    device = next(model.parameters()).device
    width = max(len(p) + len(a) for p, a in batch)
    ids = torch.tensor([p + a + [pad] * (width - len(p) - len(a)) for p, a in batch], device=device)
    mask = (torch.arange(width, device=device)[None] < torch.tensor([len(p) + len(a) for p, a in batch],
                                                                     device=device)[:, None]).long()
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    return [logits[i, len(p) - 1: len(p) + len(a) - 1].log_softmax(-1) for i, (p, a) in enumerate(batch)]


def kl_per_prompt(base_model, tuned_model, tokenizer, items: list[tuple[str, str]], batch_size: int = 4
                  ) -> list[float]:
    """Mean KL(base ‖ fine-tuned) over each response's tokens, in nats."""
    base_model.eval()
    tuned_model.eval()
    encoded = []
    for prompt, response in items:
        msgs = [{"role": "user", "content": prompt}]
        encoded.append((encode_prompt(tokenizer, msgs), answer_ids(tokenizer, msgs, response)))
    out = []
    for b in range(0, len(encoded), batch_size):
        batch = encoded[b: b + batch_size]
        with base_weights(base_model):
            base_lp = _answer_logprobs(base_model, batch, tokenizer.pad_token_id)
        tuned_lp = _answer_logprobs(tuned_model, batch, tokenizer.pad_token_id)
        for p, q in zip(base_lp, tuned_lp):
            out.append(float((p.exp() * (p - q)).sum(-1).mean()))
    return out


def check_forgetting(cfg: ForgettingConfig, tuned_model, tokenizer, base_model=None,
                     max_tokens: int = 2048) -> ForgettingResult:
    """Compare the fine-tuned model with its base. `base_model` None: the PEFT model with its adapter off."""
    base_model = base_model if base_model is not None else tuned_model
    if base_model is tuned_model and not has_adapter(tuned_model):
        raise ValueError("a model without a PEFT adapter needs its base model passed separately")
    mc_path = Path(cfg.mc_path) if cfg.mc_path else shipped("general_mc.jsonl")
    kl_path = Path(cfg.prompts_path) if cfg.prompts_path else shipped("general_prompts.jsonl")
    questions, prompts = load_mc(mc_path), load_prompts(kl_path)
    with base_weights(base_model):
        base = mc_correct(base_model, tokenizer, questions, max_tokens)
    tuned = mc_correct(tuned_model, tokenizer, questions, max_tokens)
    base_acc, tuned_acc = sum(base) / len(base), sum(tuned) / len(tuned)
    drop = (base_acc - tuned_acc) / base_acc if base_acc > 0 else 0.0
    kl = kl_per_prompt(base_model, tuned_model, tokenizer, prompts)
    mean_kl = sum(kl) / len(kl)
    ci = paired_bootstrap(tuned, base)["ci"]
    reasons = []
    if drop_flagged(base_acc - tuned_acc, ci, cfg.max_drop):
        reasons.append(f"general multiple-choice accuracy fell {base_acc:.3f} → {tuned_acc:.3f} "
                       f"({tuned_acc - base_acc:+.3f}, 95% CI {ci[0]:+.3f} to {ci[1]:+.3f}: below 0 and beyond "
                       f"the {cfg.max_drop:.3f} tolerance, {len(questions)} questions)")
    if cfg.max_kl is not None and mean_kl > cfg.max_kl:
        reasons.append(f"KL divergence from the base model is {mean_kl:.3f} nats/token, above {cfg.max_kl}")
    return ForgettingResult(mc_source=str(mc_path), questions=len(questions), base_accuracy=base_acc,
                            tuned_accuracy=tuned_acc, relative_drop=drop, difference_ci=(ci[0], ci[1]),
                            kl_source=str(kl_path), kl_prompts=len(prompts), mean_kl=mean_kl, flagged=bool(reasons),
                            reasons=reasons)


def drop_flagged(drop: float, ci: tuple[float, float] | list[float], max_drop: float) -> bool:
    """The forgetting rule: the drop (base − tuned accuracy) is significant, the whole paired-bootstrap 95 % CI
    of tuned − base lies below 0, and larger than the tolerance `max_drop`. Significance keeps noise on a
    small set from flagging; the tolerance keeps a large set from flagging a drop too small to matter."""
    return ci[1] < 0 and drop > max_drop
