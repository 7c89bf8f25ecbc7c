"""Batched greedy generation from chat prompts: encode each prompt as training and serving do, then decode
greedily (tunewise.train.decode)."""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.data.encode import encode_prompt
from tunewise.train.decode import greedy_decode


@dataclass
class Generations:
    texts: list[str]
    prompt_tokens: list[int]
    generated_tokens: list[int]
    seconds: float


def generate(model, tokenizer, prompts: list[list[dict[str, str]]], max_new_tokens: int,
             batch_size: int = 16, desc: str = "generating") -> Generations:
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    out = greedy_decode(model, tokenizer, encoded, max_new_tokens, batch_size, desc)
    return Generations(texts=out.texts, prompt_tokens=[len(e) for e in encoded],
                       generated_tokens=out.generated_tokens, seconds=out.seconds)
