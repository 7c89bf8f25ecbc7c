"""Token lengths with the chosen model's tokenizer: what the card's histogram and the context check use."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunewise.config import TaskConfig
from tunewise.data.prompt import fine_tuned_labels, training_messages
from tunewise.data.records import Record, classification_record
from tunewise.errors import TunewiseError


@dataclass
class TokenCounter:
    tokenizer: object
    name: str
    context: int | None  # the model's context window in tokens (None: unknown, no check)

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text (no special tokens), in one batched call to the fast tokenizer. The Rust
        backend's encode_batch_fast (no character offsets) when there is one: the same counts for less CPU than
        the transformers wrapper (docs/data_doctor.md, "Speed work")."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            return [len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        enc = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
        return [len(ids) for ids in enc["input_ids"]]

    def framing(self, task: TaskConfig, labels: list[str] | None) -> int:
        """Tokens the chat template, system prompt and instruction add to a record's own text, measured once
        on a probe record: content + framing is the length training sees (within a token or two, when BPE
        merges across a template boundary)."""
        probe = classification_record("probe text", "probe") if task.type == "classification" else Record(
            [{"role": "user", "content": "probe text"}, {"role": "assistant", "content": "probe"}])
        msgs = training_messages(probe, task, fine_tuned_labels(task, labels))
        try:
            rendered = self.tokenizer.apply_chat_template(msgs, tokenize=False)
        except (ValueError, TypeError, AttributeError):  # no chat template: plain concatenation
            rendered = "\n".join(m["content"] for m in msgs)
        full, own = self.count([rendered, "probe text\nprobe"])
        return max(0, full - own)


def record_text(record: Record) -> str:
    return "\n".join(m["content"] for m in record.messages)


def _context(folder: Path, tokenizer) -> int | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    ctx = cfg.get("max_position_embeddings") or getattr(tokenizer, "model_max_length", None)
    return int(ctx) if ctx and ctx < 10_000_000 else None  # transformers' "no limit" is 1e30


def load_counter(base: str, cache_dir: Path | None = None) -> tuple[TokenCounter | None, str | None]:
    """The model's tokenizer, or (None, why not): token checks are then skipped and the card says so."""
    from tunewise.models import load_tokenizer, resolve_model  # heavy

    try:
        resolved = resolve_model(base, cache_dir)
        tok = load_tokenizer(resolved.path)
    except TunewiseError as err:
        return None, f"token lengths not measured: {err}"
    except (OSError, ValueError) as err:
        return None, f"token lengths not measured: tokenizer of {base} could not be loaded ({err})"
    return TokenCounter(tok, base, _context(resolved.path, tok)), None
