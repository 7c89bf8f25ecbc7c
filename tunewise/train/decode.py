"""Batched greedy decoding from token ids, with left padding (the only padding side that works for
decoder-only models). Training's generated-answer metrics and evaluation's generation both use it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tqdm.auto import tqdm


@dataclass
class Decoded:
    texts: list[str]
    generated_tokens: list[int]
    seconds: float


def stop_ids(model, tokenizer) -> list[int]:
    """End of sequence for the tokenizer and for the model's generation config (chat models end a turn with
    their own token)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return [t for t in {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} if t is not None]


def greedy_decode(model, tokenizer, encoded: list[list[int]], max_new_tokens: int, batch_size: int = 16,
                  desc: str = "generating") -> Decoded:
    """The greedy continuation of each prompt (token ids), decoded without special tokens."""
    import torch  # heavy

    model.eval()
    device = next(model.parameters()).device
    # Longest first: batches of similar length waste less padding, and an OOM shows up in the first batch.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    texts: list[str] = [""] * len(encoded)
    gen_counts = [0] * len(encoded)
    pad = tokenizer.pad_token_id
    stops = stop_ids(model, tokenizer)
    start = time.perf_counter()
    with torch.no_grad():
        for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
            idx = order[b: b + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device=device)
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx],
                                device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=pad)
            for row, i in zip(out[:, width:].tolist(), idx):
                n = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
                gen_counts[i] = n
                texts[i] = tokenizer.decode(row[:n], skip_special_tokens=True).strip()
    return Decoded(texts=texts, generated_tokens=gen_counts, seconds=time.perf_counter() - start)
