"""The canonical record every input format becomes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Record:
    """One example: a conversation whose last turn is the assistant's answer (the training target).

    `label` is set for classification; `meta` keeps the source file, line and any extra columns.
    """

    messages: list[dict[str, str]]
    label: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]

    @property
    def input_text(self) -> str:
        """The last user turn: what a reviewer reads as 'the input'."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    def to_json(self) -> dict:
        return {"messages": self.messages, "label": self.label, "meta": self.meta}


def classification_record(text: str, label: str, meta: dict | None = None) -> Record:
    return Record(
        messages=[{"role": "user", "content": text}, {"role": "assistant", "content": label}],
        label=label,
        meta=meta or {},
    )
