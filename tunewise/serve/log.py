"""Request and feedback logging. Each row is written in its own committed transaction *before* the client gets
its answer, so an acknowledged request or feedback survives a crash (SQLite: WAL + synchronous=FULL)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from tunewise.data.pii import redact_text
from tunewise.registry.schema import feedback, requests


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
    # PII and secrets (keys pasted into prompts) never reach the log; `redacted` marks rows written this way.
    values["messages"] = [{**m, "content": redact_text(m["content"])} for m in row.messages]
    values["response"] = redact_text(row.response)
    values["redacted"] = True
    with engine.begin() as conn:
        conn.execute(insert(requests).values(**values))


def request_owner(engine: Engine, request_id: str) -> tuple[bool, int | None]:
    """(exists, api key id that made it)."""
    with engine.connect() as conn:
        row = conn.execute(select(requests.c.api_key_id).where(requests.c.id == request_id)).first()
    return (row is not None, row[0] if row else None)


def write_feedback(engine: Engine, request_id: str, rating: int, correction: str | None) -> int:
    if correction is not None:
        correction = redact_text(correction)
    with engine.begin() as conn:
        return conn.execute(insert(feedback).values(request_id=request_id, rating=rating, correction=correction,
                                                    exported=False)).inserted_primary_key[0]
