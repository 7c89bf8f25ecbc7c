"""Chat-template tokenisation with completion-only labels: how a prompt becomes the tokens a model sees.

The prompt is rendered exactly as at inference time (`add_generation_prompt=True`), and the answer tokens are
what the full conversation adds after it. So the tokens a model is trained to continue from are byte for byte
the tokens it is evaluated and served with (training, evaluation and serving all call `encode_prompt`), and the
loss covers the answer (and its end-of-turn token) only."""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100  # the label of a position the loss skips (transformers' and torch's ignore_index)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    def to_features(self) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels}


def _ids(out) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); older versions a list.
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


def encode_prompt(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    return _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))


def _end_of_turn_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(tokenizer, "generation_config", None), "eos_token_id", None)
    for extra in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
        ids.add(extra)
    return {i for i in ids if i is not None}


def encode_example(tokenizer, prompt: list[dict[str, str]], answer: str) -> Encoded:
    prompt_ids = encode_prompt(tokenizer, prompt)
    full_ids = _ids(tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], tokenize=True))
    if full_ids[: len(prompt_ids)] == prompt_ids:
        answer_ids = full_ids[len(prompt_ids):]
    else:
        # A template that renders the history differently once an answer follows: fall back to appending the
        # answer and EOS to the inference-time prompt, which keeps train and serve prompts identical.
        answer_ids = _ids(tokenizer(answer, add_special_tokens=False)) + [tokenizer.eos_token_id]
    # Whatever a template puts after the end-of-turn token (often a newline) is never generated: cut it.
    stops = _end_of_turn_ids(tokenizer)
    for i, tok in enumerate(answer_ids):
        if tok in stops:
            answer_ids = answer_ids[: i + 1]
            break
    else:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    return Encoded(prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids)
