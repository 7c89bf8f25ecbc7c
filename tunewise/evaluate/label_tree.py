"""Label scoring that computes every shared token once: the prompts' common opening and the labels' common
first tokens.

The prompts of one evaluation share a long opening (system turn, the label list, fixed few-shot examples):
it runs through the model once and its key/value cache serves every batch. Each row of a batch then holds
only its own prompt suffix, followed by the labels packed as a trie (a token shared by several labels appears
once), under a 4D attention mask that lets a label token see the prompt and its own trie ancestors only, with
position ids that restart after the prompt on every branch. One forward scores every label of B rows, and no
cache is copied per label. A label's last token (its end-of-turn) is never fed: only its log-probability,
read off its parent's logits, is needed.

transformers has no "score N continuations as a tree" API, hence this module; tests check it against plain
full-sequence scoring, and `score.score_labels` checks it against the per-label cache path on the first row
of every call."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tunewise.models import sdpa_exact

# Attention implementations that take a custom additive 4D mask as given (flash/flex kernels do not).
MASKABLE_ATTENTION = ("sdpa", "eager")


@dataclass
class LabelTrie:
    node_tokens: torch.Tensor  # [nodes]: the token of every node
    logit_rows: torch.Tensor  # [nodes]: row of the kept logits that predicts it (0 = the prompt's last token)
    paths: torch.Tensor  # [labels, deepest]: a label's nodes from first to last token; `nodes` pads
    inner_tokens: torch.Tensor  # [inner]: tokens of the nodes with children, parents first: the fed tokens
    inner_depths: torch.Tensor  # [inner]: 0 for a label's first token
    inner_sees: torch.Tensor  # [inner, inner] bool: column k is row i itself or one of its ancestors


def label_trie(label_ids: list[list[int]], device: torch.device | str = "cpu") -> LabelTrie:
    """The trie of the labels' token sequences (each non-empty). A dict of children by hand: the mask needs
    parent, depth and ancestor arrays that no trie package returns."""
    tokens: list[int] = []
    parents: list[int] = []
    children: dict[tuple[int, int], int] = {}
    paths = []
    for ids in label_ids:
        node, path = -1, []
        for t in ids:
            if (node, t) not in children:
                children[(node, t)] = len(tokens)
                tokens.append(t)
                parents.append(node)
            node = children[(node, t)]
            path.append(node)
        paths.append(path)
    inner = sorted({p for p in parents if p >= 0})  # nodes are numbered parents first, so this order is too
    slot = {n: i for i, n in enumerate(inner)}
    depth = [0] * len(tokens)
    for n, p in enumerate(parents):
        depth[n] = depth[p] + 1 if p >= 0 else 0
    sees = torch.zeros(len(inner), len(inner), dtype=torch.bool)
    for i, n in enumerate(inner):
        while n >= 0:
            sees[i, slot[n]] = True
            n = parents[n]
    deepest = max(len(p) for p in paths)
    padded = [p + [len(tokens)] * (deepest - len(p)) for p in paths]
    return LabelTrie(
        node_tokens=torch.tensor(tokens, device=device),
        logit_rows=torch.tensor([slot[p] + 1 if p >= 0 else 0 for p in parents], device=device),
        paths=torch.tensor(padded, device=device),
        inner_tokens=torch.tensor([tokens[n] for n in inner], device=device, dtype=torch.long),
        inner_depths=torch.tensor([depth[n] for n in inner], device=device, dtype=torch.long),
        inner_sees=sees.to(device))


def common_prefix_len(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least its last token (whose logits score the
    first label token)."""
    if not prompts:
        return 0
    # os.path.commonprefix compares any sequences element by element, token lists included.
    return min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1)


@dataclass
class SharedPrefix:
    length: int
    cache: object  # the model's key/value cache of the prefix, batch 1; copied for every batch, never updated


@torch.no_grad()
def encode_prefix(model, prefix: list[int]) -> SharedPrefix:
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
    return SharedPrefix(len(prefix), out.past_key_values)


@contextmanager
def maskable_attention(model) -> Iterator[None]:
    """The model on sdpa inside the block if its attention kernel takes no custom mask (flash or flex attention):
    the same attention, another kernel; on eager where SDPA would not compute it (sdpa_exact: Gemma 2, which
    trains on FlexAttention). A model that cannot switch is left as it is."""
    current = getattr(model.config, "_attn_implementation", None)
    if current in MASKABLE_ATTENTION or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("sdpa" if sdpa_exact(model) else "eager")
    try:
        yield
    finally:
        model.set_attn_implementation(current)


def tree_unsupported(model, prefix: SharedPrefix, longest_row: int) -> str | None:
    """Why this model cannot score a label tree (None if it can): it needs a custom-mask attention kernel and
    full attention over the whole row in every layer (no recurrent state, no window shorter than the row)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer  # heavy

    # transformers exposes the chosen kernel only as this attribute.
    attention = getattr(model.config, "_attn_implementation", None)
    if attention not in MASKABLE_ATTENTION:
        return f"attention implementation {attention!r} takes no custom 4D mask"
    if prefix.length == 0:
        return "the prompts share no opening tokens"
    cache = prefix.cache
    if not isinstance(cache, DynamicCache):
        return f"{type(cache).__name__} is not a key/value cache"
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
            return f"cache layer {type(layer).__name__} is not plain attention"
        window = getattr(layer, "sliding_window", None)
        if window is not None and window < prefix.length + longest_row:
            return f"sliding window {window} is shorter than a row ({prefix.length + longest_row} tokens)"
    return None


def _row_mask(suffix_lens: torch.Tensor, width: int, prefix_len: int, trie: LabelTrie,
              dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, queries, prefix + queries] additive mask: suffix causal over its real tokens, labels over the
    whole prompt and their own ancestors; padding queries see the prefix so no row is all -inf (NaN)."""
    b, inner = len(suffix_lens), len(trie.inner_tokens)
    device = suffix_lens.device
    q = width + inner
    real = torch.arange(width, device=device)[None, :] >= (width - suffix_lens)[:, None]  # [B, width]
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    sees = torch.zeros(b, q, prefix_len + q, dtype=torch.bool, device=device)
    sees[:, :, :prefix_len] = True
    sees[:, :width, prefix_len: prefix_len + width] = causal[None] & real[:, None, :]
    sees[:, width:, prefix_len: prefix_len + width] = real[:, None, :]
    sees[:, width:, prefix_len + width:] = trie.inner_sees[None]
    mask = torch.zeros(sees.shape, dtype=dtype, device=device).masked_fill_(~sees, torch.finfo(dtype).min)
    return mask[:, None]


@torch.no_grad()
def score_tree_rows(model, prefix: SharedPrefix, suffixes: list[list[int]], trie: LabelTrie,
                    pad_id: int) -> torch.Tensor:
    """[B, labels] float32: sum of the label tokens' log-probabilities after prefix + suffixes[b]."""
    device = trie.node_tokens.device
    width, inner = max(len(s) for s in suffixes), len(trie.inner_tokens)
    lens = torch.tensor([len(s) for s in suffixes], device=device)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in suffixes], device=device)
    ids = torch.cat([ids, trie.inner_tokens.expand(len(suffixes), -1)], dim=1)
    # Real suffix tokens continue the prefix's positions; every label branch starts right after the prompt.
    suffix_pos = (torch.arange(width, device=device)[None, :] - (width - lens)[:, None]).clamp(min=0)
    label_pos = lens[:, None] + trie.inner_depths[None, :]
    pos = prefix.length + torch.cat([suffix_pos, label_pos], dim=1)
    dtype = model.get_input_embeddings().weight.dtype
    mask = _row_mask(lens, width, prefix.length, trie, dtype)
    cache = copy.deepcopy(prefix.cache)  # forward appends to the cache it is given
    cache.batch_repeat_interleave(len(suffixes))
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=inner + 1)
    logits = out.logits.float()  # [B, inner + 1, vocab]: the prompt's last token, then every inner node
    picked = logits[:, trie.logit_rows, trie.node_tokens]
    node_lp = picked - torch.logsumexp(logits, dim=-1)[:, trie.logit_rows]
    node_lp = torch.cat([node_lp, node_lp.new_zeros(len(suffixes), 1)], dim=1)  # the padding node: 0
    return node_lp[:, trie.paths].sum(-1)
