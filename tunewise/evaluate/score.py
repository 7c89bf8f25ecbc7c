"""Log-likelihood of given continuations: class labels, multiple-choice answers, reference answers.

Class labels go through `label_tree`: the prompts' shared opening runs once, and each row scores all labels,
packed as a trie, in one pass. Other continuations (and label scoring on a model the tree cannot run on) use
the per-example cache path here: an example's prompt runs once and its key/value cache is copied to each of
its continuation rows, so N continuations cost one prompt pass plus one short pass over N rows. transformers
has no API for "score these N continuations of one prompt" (generate() only samples), hence the hand-written
loops; both are checked against plain full-sequence scoring in the tests."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tunewise.data.encode import IGNORE, encode_example, encode_prompt
from tunewise.evaluate.label_tree import (
    LabelTrie,
    SharedPrefix,
    common_prefix_len,
    encode_prefix,
    label_trie,
    maskable_attention,
    score_tree_rows,
    tree_unsupported,
)


@dataclass
class Scored:
    logprobs: list[list[float]]  # per example, per continuation: sum of token log-probabilities
    lengths: list[list[int]]  # tokens per continuation (its end-of-turn token included)
    prompt_tokens: list[int]
    seconds: float
    method: str = "per-example cache"  # or "label tree" (score_label_ids)


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
def _score_group(model, idx: list[int], prompts, conts, pad: int,
                 prefix: SharedPrefix | None = None) -> list[list[float]]:
    device = next(model.parameters()).device
    n = prefix.length if prefix is not None else 0
    suffixes = [prompts[i][n:] for i in idx]
    width = max(len(s) for s in suffixes)
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
    # Left padding: positions must count real tokens only, as generate() does.
    pos = n + (mask.cumsum(-1) - 1).clamp(min=0)
    cache = None
    if prefix is not None:  # every row reads the shared opening's cache; padding sits between it and the suffix
        cache = copy.deepcopy(prefix.cache)
        cache.batch_repeat_interleave(len(idx))
        mask = torch.cat([mask.new_ones(len(idx), n), mask], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
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
                        max_tokens: int = 2048, max_examples: int = 16, desc: str = "scoring",
                        share_prefix: bool = True) -> Scored:
    """Sum log-probability of every continuation `conts[i][j]` (token ids) after prompt `prompts[i]`.
    share_prefix: the prompts' common opening (a chat template's system turn) runs once for all batches."""
    model.eval()
    # Longest prompts first: similar lengths share a batch, and an out-of-memory shows up at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    scores: list[list[float]] = [[] for _ in prompts]
    start = time.perf_counter()
    with maskable_attention(model):
        prefix = _shared_prefix(model, prompts, conts) if share_prefix else None
        for group in tqdm(_groups(order, prompts, conts, max_tokens, max_examples), desc=desc, unit="batch",
                          leave=False):
            for i, s in zip(group, _score_group(model, group, prompts, conts, pad_id, prefix)):
                scores[i] = s
    return Scored(scores, [[len(c) for c in cs] for cs in conts], [len(p) for p in prompts],
                  time.perf_counter() - start)


def _shared_prefix(model, prompts: list[list[int]], conts: list[list[list[int]]],
                   min_tokens: int = 8) -> SharedPrefix | None:
    """The cache of the prompts' common opening, or None where it saves little or the model cannot take a
    padded hole between the cached opening and a row (the label tree's conditions)."""
    n = common_prefix_len(prompts) if len(prompts) > 1 else 0
    if n < min_tokens:
        return None
    prefix = encode_prefix(model, prompts[0][:n])
    longest = max(len(p) - n + max((len(c) for c in cs), default=0) for p, cs in zip(prompts, conts))
    return None if tree_unsupported(model, prefix, longest) else prefix


def score_labels(model, tokenizer, prompts: list[list[dict[str, str]]], labels: list[str],
                 max_tokens: int = 2048, max_examples: int = 16, desc: str = "scoring labels"
                 ) -> tuple[list[str], Scored]:
    """Constrained classification: the label whose answer tokens are most likely after each prompt."""
    probe = prompts[0] if prompts else [{"role": "user", "content": "?"}]
    label_ids = [answer_ids(tokenizer, probe, lab) for lab in labels]
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    scored = score_label_ids(model, encoded, label_ids, tokenizer.pad_token_id, max_tokens, max_examples, desc)
    best = [labels[max(range(len(labels)), key=s.__getitem__)] for s in scored.logprobs]
    return best, scored


def score_label_ids(model, prompts: list[list[int]], label_ids: list[list[int]], pad_id: int,
                    max_tokens: int = 2048, max_examples: int = 16, desc: str = "scoring labels") -> Scored:
    """Sum log-probability of every label `label_ids[j]` after every prompt: as a label tree where the model
    allows it and agrees with the per-label cache path on the first prompt, else on that path."""
    model.eval()
    start = time.perf_counter()
    lengths = [[len(c) for c in label_ids] for _ in prompts]
    if not prompts:
        return Scored(logprobs=[], lengths=[], prompt_tokens=[], seconds=0.0)
    n_prefix = common_prefix_len(prompts)
    suffixes = [p[n_prefix:] for p in prompts]
    with maskable_attention(model):
        prefix = encode_prefix(model, prompts[0][:n_prefix]) if n_prefix else SharedPrefix(0, None)
        trie = label_trie(label_ids, next(model.parameters()).device)
        why = (tree_unsupported(model, prefix, max(len(s) for s in suffixes) + len(trie.inner_tokens))
               or _tree_disagrees(model, prefix, prompts[0], trie, label_ids, pad_id))
        if not why:
            scores = _score_tree_batches(model, prefix, suffixes, trie, pad_id, max_tokens, max_examples, desc)
            return Scored(logprobs=scores, lengths=lengths, prompt_tokens=[len(p) for p in prompts],
                          seconds=time.perf_counter() - start, method="label tree")
    tqdm.write(f"{desc}: {why}; scoring each label on its own cache row instead")
    scored = score_continuations(model, prompts, [label_ids] * len(prompts), pad_id, max_tokens, max_examples,
                                 desc)
    scored.seconds = time.perf_counter() - start
    return scored


def _score_tree_batches(model, prefix: SharedPrefix, suffixes: list[list[int]], trie: LabelTrie, pad_id: int,
                        max_tokens: int, max_examples: int, desc: str) -> list[list[float]]:
    # Longest suffixes first: similar lengths share a batch, and an out-of-memory shows up at once.
    order = sorted(range(len(suffixes)), key=lambda i: -len(suffixes[i]))
    scores: list[list[float]] = [[] for _ in suffixes]
    for batch in tqdm(_tree_batches(order, suffixes, len(trie.inner_tokens), max_tokens, max_examples),
                      desc=desc, unit="batch", leave=False):
        rows = score_tree_rows(model, prefix, [suffixes[i] for i in batch], trie, pad_id).tolist()
        for i, s in zip(batch, rows):
            scores[i] = s
    return scores


def _tree_batches(order: list[int], suffixes: list[list[int]], inner: int, max_tokens: int,
                  max_examples: int) -> list[list[int]]:
    """Consecutive rows of `order` (longest suffix first) whose tokens (rows × (suffix + inner nodes)) stay
    under max_tokens; at least one row per batch."""
    batches, k = [], 0
    while k < len(order):
        size = max(1, min(max_examples, max_tokens // (len(suffixes[order[k]]) + inner)))
        batches.append(order[k: k + size])
        k += size
    return batches


def _tree_disagrees(model, prefix: SharedPrefix, prompt: list[int], trie: LabelTrie, label_ids: list[list[int]],
                    pad_id: int, checked: int = 8) -> str | None:
    """Why the tree's scores of one prompt differ from the per-label path's beyond rounding (None if they
    agree), on the `checked` longest labels: the deepest branches, where a model that reads positions or
    biases from the mask instead of position_ids goes wrong first. A subset keeps this cheap on a CPU."""
    longest = sorted(range(len(label_ids)), key=lambda j: -len(label_ids[j]))[:checked]
    tree = score_tree_rows(model, prefix, [prompt[prefix.length:]], trie, pad_id)[0, longest].tolist()
    plain = score_continuations(model, [prompt], [[label_ids[j] for j in longest]], pad_id,
                                desc="checking the label tree", share_prefix=False).logprobs[0]
    # Per token: fp32 paths agree to ~1e-5; bf16/fp16 logits carry ~1e-2 rounding each.
    per_token = 1e-3 if model.get_input_embeddings().weight.dtype == torch.float32 else 0.1
    worst = max(abs(a - b) / len(label_ids[j]) for a, b, j in zip(tree, plain, longest))
    return f"the label tree differs by {worst:.3g} nats per token" if worst > per_token else None


def answer_nll(model, tokenizer, prompts: list[list[dict[str, str]]], answers: list[str],
               max_tokens: int = 2048, max_examples: int = 16) -> tuple[list[float], list[int]]:
    """Per example: negative log-likelihood (nats) of the reference answer and its token count."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    conts = [[answer_ids(tokenizer, p, a)] for p, a in zip(prompts, answers)]
    scored = score_continuations(model, encoded, conts, tokenizer.pad_token_id, max_tokens, max_examples,
                                 desc="perplexity")
    return [-s[0] for s in scored.logprobs], [n[0] for n in scored.lengths]
