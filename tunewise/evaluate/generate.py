"""Batched greedy generation with left padding (the only padding side that works for decoder-only models)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tunewise.data.encode import encode_prompt


@dataclass
class Generations:
    texts: list[str]
    prompt_tokens: list[int]
    generated_tokens: list[int]
    seconds: float


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[dict[str, str]]], max_new_tokens: int,
             batch_size: int = 16, desc: str = "generating") -> Generations:
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    # Longest first: batches of similar length waste less padding, and an OOM shows up in the first batch.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    texts: list[str] = [""] * len(encoded)
    gen_counts = [0] * len(encoded)
    pad = tokenizer.pad_token_id
    stops = [t for t in {tokenizer.eos_token_id, *(_gen_eos(model))} if t is not None]
    start = time.perf_counter()
    for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[b: b + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device=device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx], device=device)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stops, pad_token_id=pad)
        for row, i in zip(out[:, width:].tolist(), idx):
            n = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            gen_counts[i] = n
            texts[i] = tokenizer.decode(row[:n], skip_special_tokens=True).strip()
    return Generations(texts, [len(e) for e in encoded], gen_counts, time.perf_counter() - start)


def _gen_eos(model) -> list:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return eos if isinstance(eos, list) else [eos]
