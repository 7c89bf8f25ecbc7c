"""Log-likelihood of given continuations: class labels, multiple-choice answers, reference answers.

Each example's prompt is run once and its key/value cache is reused for all of that example's
continuations, so scoring 77 labels costs one prompt pass plus one short pass over 77 label rows, not 77
full passes. transformers has no API for "score these N continuations of one prompt" (generate() only
samples), hence the hand-written loop; it is checked against plain full-sequence scoring in the tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tunewise.data.encode import IGNORE, encode_example, encode_prompt


@dataclass
class Scored:
    logprobs: list[list[float]]  # per example, per continuation: sum of token log-probabilities
    lengths: list[list[int]]  # tokens per continuation (its end-of-turn token included)
    prompt_tokens: list[int]
    seconds: float


def answer_ids(tokenizer, messages: list[dict[str, str]], answer: str) -> list[int]:
    """The tokens the assistant turn `answer` adds after the prompt, end-of-turn token included: exactly the
    tokens training puts the loss on, so "card" and "card arrival" differ by more than a prefix."""
    enc = encode_example(tokenizer, messages, answer)
    n_prompt = sum(1 for lab in enc.labels if lab == IGNORE)
    return enc.input_ids[n_prompt:]


def _groups(order: list[int], prompts: list[list[int]], conts: list[list[list[int]]],
            max_tokens: int, max_examples: int) -> list[list[int]]:
    """Pack examples into batches whose continuation block (rows × longest row) stays under max_tokens."""
    groups: list[list[int]] = []
    cur: list[int] = []
    rows = width = 0
    for i in order:
        if not conts[i]:
            continue
        r, w = len(conts[i]), max(len(c) for c in conts[i])
        if cur and ((rows + r) * max(width, w) > max_tokens or len(cur) >= max_examples):
            groups.append(cur)
            cur, rows, width = [], 0, 0
        cur.append(i)
        rows, width = rows + r, max(width, w)
    if cur:
        groups.append(cur)
    return groups


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # gather − logsumexp instead of log_softmax: no second vocabulary-sized tensor.
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def _score_group(model, idx: list[int], prompts, conts, pad: int) -> list[list[float]]:
    device = next(model.parameters()).device
    width = max(len(prompts[i]) for i in idx)
    ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
    mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device)
    # Left padding: positions must count real tokens only, as generate() does.
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    rows = [(b, c) for b, i in enumerate(idx) for c in conts[i]]
    rep = torch.tensor([b for b, _ in rows], device=device)
    t = max(len(c) for _, c in rows)
    cont = torch.tensor([c + [pad] * (t - len(c)) for _, c in rows], device=device)
    cmask = torch.tensor([[1] * len(c) + [0] * (t - len(c)) for _, c in rows], device=device)
    lp = torch.zeros(len(rows), t, device=device)
    lp[:, 0] = _token_logprobs(out.logits[:, -1][rep], cont[:, 0])
    if t > 1:
        cache = out.past_key_values
        cache.reorder_cache(rep)  # index_select on the batch axis: row r reuses its example's prompt cache
        cpos = mask.sum(-1)[rep].unsqueeze(1) + torch.arange(t - 1, device=device)
        out2 = model(input_ids=cont[:, :-1], attention_mask=torch.cat([mask[rep], cmask[:, :-1]], dim=1),
                     position_ids=cpos, past_key_values=cache, use_cache=True)
        lp[:, 1:] = _token_logprobs(out2.logits, cont[:, 1:])
    sums = (lp * cmask).sum(-1).tolist()
    result, k = [], 0
    for i in idx:
        result.append(sums[k: k + len(conts[i])])
        k += len(conts[i])
    return result


def score_continuations(model, prompts: list[list[int]], conts: list[list[list[int]]], pad_id: int,
                        max_tokens: int = 2048, max_examples: int = 16, desc: str = "scoring") -> Scored:
    """Sum log-probability of every continuation `conts[i][j]` (token ids) after prompt `prompts[i]`."""
    model.eval()
    # Longest prompts first: similar lengths share a batch, and an out-of-memory shows up at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    scores: list[list[float]] = [[] for _ in prompts]
    start = time.perf_counter()
    for group in tqdm(_groups(order, prompts, conts, max_tokens, max_examples), desc=desc, unit="batch",
                      leave=False):
        for i, s in zip(group, _score_group(model, group, prompts, conts, pad_id)):
            scores[i] = s
    return Scored(scores, [[len(c) for c in cs] for cs in conts], [len(p) for p in prompts],
                  time.perf_counter() - start)


def score_labels(model, tokenizer, prompts: list[list[dict[str, str]]], labels: list[str],
                 max_tokens: int = 2048, max_examples: int = 16, desc: str = "scoring labels"
                 ) -> tuple[list[str], Scored]:
    """Constrained classification: the label whose answer tokens are most likely after each prompt."""
    probe = prompts[0] if prompts else [{"role": "user", "content": "?"}]
    label_ids = [answer_ids(tokenizer, probe, lab) for lab in labels]
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    scored = score_continuations(model, encoded, [label_ids] * len(encoded), tokenizer.pad_token_id,
                                 max_tokens, max_examples, desc)
    best = [labels[max(range(len(labels)), key=s.__getitem__)] for s in scored.logprobs]
    return best, scored


def answer_nll(model, tokenizer, prompts: list[list[dict[str, str]]], answers: list[str],
               max_tokens: int = 2048, max_examples: int = 16) -> tuple[list[float], list[int]]:
    """Per example: negative log-likelihood (nats) of the reference answer and its token count."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    conts = [[answer_ids(tokenizer, p, a)] for p, a in zip(prompts, answers)]
    scored = score_continuations(model, encoded, conts, tokenizer.pad_token_id, max_tokens, max_examples,
                                 desc="perplexity")
    return [-s[0] for s in scored.logprobs], [n[0] for n in scored.lengths]
