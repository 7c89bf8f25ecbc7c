"""Request and feedback logging. Each row is written in its own committed transaction *before* the client gets
its answer, so an acknowledged request or feedback survives a crash (SQLite: WAL + synchronous=FULL)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from tunewise.registry.schema import feedback, requests

log = logging.getLogger("tunewise.serve")


def _find_redactor() -> Callable[[str], str] | None:
    # PII redaction belongs to the data doctor (tunewise/data/pii.py). Until that module is on this branch the
    # server logs text unredacted and marks each row `redacted=False`, so nothing is silently assumed clean.
    try:
        from tunewise.data import pii
    except ImportError:
        return None
    fn = getattr(pii, "redact_text", None) or getattr(pii, "redact", None)
    if not callable(fn):
        return None

    def redact(text: str) -> str:
        out = fn(text)
        return out if isinstance(out, str) else getattr(out, "text", out[0] if isinstance(out, tuple) else str(out))

    return redact


REDACT = _find_redactor()
if REDACT is None:
    log.warning("tunewise.data.pii not available: request logs are stored unredacted (redacted=False)")


@dataclass
class RequestLog:
    id: str
    model_ref: str
    model_id: int
    model_name: str
    model_version: int
    messages: list[dict]
    response: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    stream: bool
    api_key_id: int | None


def write_request(engine: Engine, row: RequestLog) -> None:
    values = dict(row.__dict__)
    if REDACT is not None:
        values["messages"] = [{**m, "content": REDACT(m["content"])} for m in row.messages]
        values["response"] = REDACT(row.response)
    values["redacted"] = REDACT is not None
    with engine.begin() as conn:
        conn.execute(insert(requests).values(**values))


def request_owner(engine: Engine, request_id: str) -> tuple[bool, int | None]:
    """(exists, api key id that made it)."""
    with engine.connect() as conn:
        row = conn.execute(select(requests.c.api_key_id).where(requests.c.id == request_id)).first()
    return (row is not None, row[0] if row else None)


def write_feedback(engine: Engine, request_id: str, rating: int, correction: str | None) -> int:
    if correction is not None and REDACT is not None:
        correction = REDACT(correction)
    with engine.begin() as conn:
        return conn.execute(insert(feedback).values(request_id=request_id, rating=rating, correction=correction,
                                                    exported=False)).inserted_primary_key[0]
