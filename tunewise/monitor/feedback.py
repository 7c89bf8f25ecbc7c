"""Feedback → dataset rows. A correction becomes a canonical JSONL row ({"messages", "label"}) that the data
stage loads like any other file: the conversation the user sent, answered by the correction.
`split_corrections` holds part of them out, so a model retrained on the rest is judged on corrections it never saw."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from tunewise.config import DedupConfig
from tunewise.data.records import Record
from tunewise.data.split import remove_leaks, split_off
from tunewise.errors import DataError
from tunewise.registry.schema import feedback, requests


@dataclass
class FeedbackExport:
    path: Path
    rows: int
    feedback_ids: list[int]
    unredacted: int  # rows whose text was logged before PII redaction was available


def correction_rows(engine: Engine, model_name: str | None = None, only_new: bool = False) -> list[dict]:
    q = (select(feedback.c.id, feedback.c.rating, feedback.c.correction, requests.c.id.label("request_id"),
                requests.c.messages, requests.c.model_name, requests.c.model_version, requests.c.redacted)
         .join(requests, feedback.c.request_id == requests.c.id)
         .where(feedback.c.correction.is_not(None)).order_by(feedback.c.id))
    if model_name:
        q = q.where(requests.c.model_name == model_name)
    if only_new:
        q = q.where(feedback.c.exported.is_(False))
    out = []
    with engine.connect() as conn:
        for r in conn.execute(q).mappings():
            # System turns are the server's framing, not the user's data: training adds its own.
            msgs = [m for m in r["messages"] if m["role"] != "system"]
            out.append({"messages": [*msgs, {"role": "assistant", "content": r["correction"].strip()}],
                        "label": r["correction"].strip(),
                        "meta": {"feedback_id": r["id"], "request_id": r["request_id"], "rating": r["rating"],
                                 "model": f"{r['model_name']}:v{r['model_version']}", "redacted": r["redacted"]}})
    return out


@dataclass
class CorrectionSplit:
    train: list[dict]  # correction rows the candidate trains on
    held_out: list[dict]  # correction rows it is scored on, never trained on
    dropped: int  # held-out rows left out because they (near-)duplicate a trained one: they would test memory


def split_corrections(rows: list[dict], fraction: float, min_held_out: int, seed: int,
                      dedup: DedupConfig | None = None) -> CorrectionSplit:
    """Hold out `fraction` of the correction rows (at least `min_held_out`), stratified by label and seeded.
    A held-out row whose input repeats or nearly repeats a trained row's (the data stage's MinHash check) is
    dropped: a model that memorised the trained one would pass on it. Raises DataError when fewer than
    `min_held_out` usable rows can be held out, or none is left to train on."""
    records = [Record(r["messages"], r["label"], {"row": i}) for i, r in enumerate(rows)]
    k = max(min_held_out, round(fraction * len(records)))
    if len(records) <= k:
        raise DataError(f"{len(records)} feedback corrections: too few to hold out {k} for the feedback gate and "
                        "train on the rest; collect more feedback (or lower registry.feedback_holdout_min)")
    rest, held = split_off(records, k, seed)
    _, kept, _ = remove_leaks(rest, [], held, dedup or DedupConfig(), classification=True)
    if len(kept) < min_held_out:
        raise DataError(f"only {len(kept)} of {len(held)} held-out feedback corrections differ from the trained "
                        f"ones (the others repeat a trained input); the feedback gate needs {min_held_out}: collect "
                        "more varied feedback")
    return CorrectionSplit([rows[r.meta["row"]] for r in rest], [rows[r.meta["row"]] for r in kept],
                           len(held) - len(kept))


def export_feedback(engine: Engine, out: Path, model_name: str | None = None, only_new: bool = False,
                    mark_exported: bool = False) -> FeedbackExport:
    """Write every correction as a dataset row to `out` (JSONL)."""
    rows = correction_rows(engine, model_name, only_new)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    ids = [r["meta"]["feedback_id"] for r in rows]
    if mark_exported and ids:
        with engine.begin() as conn:
            conn.execute(update(feedback).where(feedback.c.id.in_(ids)).values(exported=True))
    return FeedbackExport(out, len(rows), ids, sum(not r["meta"]["redacted"] for r in rows))
