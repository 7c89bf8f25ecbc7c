"""The canonical record every input format becomes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Record:
    """One example: a conversation whose last turn is the assistant's answer (the training target).

    `label` is set for classification; `meta` keeps the source file, line and any extra columns.
    `references`: every acceptable answer of a test example that several rows answer (E2E gives several
    human references per input); None for an ordinary row, whose one reference is `answer`.
    """

    messages: list[dict[str, str]]
    label: str | None = None
    meta: dict = field(default_factory=dict)
    references: list[str] | None = None

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

    @property
    def all_references(self) -> list[str]:
        return list(self.references) if self.references else [self.answer]

    def to_json(self) -> dict:
        out = {"messages": self.messages, "label": self.label, "meta": self.meta}
        if self.references is not None:
            out["references"] = self.references
        return out


def classification_record(text: str, label: str, meta: dict | None = None) -> Record:
    return Record(
        messages=[{"role": "user", "content": text}, {"role": "assistant", "content": label}],
        label=label,
        meta=meta or {},
    )


def group_references(records: list[Record]) -> list[Record]:
    """One record per distinct prompt (every turn before the answer), in first-seen order, holding every
    answer given to it as `references`; the first answer stays the record's own."""
    groups: dict[str, Record] = {}
    for r in records:
        key = json.dumps(r.prompt_messages, sort_keys=True, ensure_ascii=False)
        first = groups.get(key)
        if first is None:
            groups[key] = Record(messages=r.messages, label=r.label, meta=dict(r.meta), references=r.all_references)
            continue
        first.references.extend(x for x in r.all_references if x not in first.references)
        first.meta["rows"] = first.meta.get("rows", 1) + 1
        if r.meta.get("leaked_from_train"):
            first.meta["leaked_from_train"] = True
    return list(groups.values())
