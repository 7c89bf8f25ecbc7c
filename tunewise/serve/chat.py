"""POST /v1/chat/completions, plain and streamed (server-sent events). Every answered request is logged before
the client sees its end, so it can be given feedback on."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from tunewise.serve.deps import ApiKey, MaxTokens, ServeState, State
from tunewise.serve.engine import Completion, Served
from tunewise.serve.log import RequestLog, write_request
from tunewise.serve.schemas import ChatRequest

router = APIRouter()


@router.post("/v1/chat/completions")
def chat(req: ChatRequest, state: State, key_id: ApiKey, max_tokens: MaxTokens):
    served = state.resolve(req.model)
    rid = "chatcmpl-" + uuid.uuid4().hex
    messages = [m.model_dump() for m in req.messages]
    if req.stream:
        return StreamingResponse(_sse(state, rid, req, served, messages, max_tokens, key_id),
                                 media_type="text/event-stream", headers={"x-request-id": rid})
    start = time.perf_counter()
    try:
        done = state.pool.complete(served, messages, max_tokens, req.temperature, req.top_p, req.seed)
    except Exception:
        state.metrics.requests.labels(served.record.ref, "error").inc()
        raise
    _record(state, rid, req, served, done, time.perf_counter() - start, key_id, False)
    return JSONResponse({
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": served.record.ref,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                     "finish_reason": done.finish_reason}],
        "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                  "total_tokens": done.prompt_tokens + done.completion_tokens}},
        headers={"x-request-id": rid})


def _sse(state: ServeState, rid: str, req: ChatRequest, served: Served, messages: list[dict], max_tokens: int,
         key_id: int | None) -> Iterator[str]:
    def chunk(delta: dict, finish: str | None = None) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": served.record.ref, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n"

    start = time.perf_counter()
    yield chunk({"role": "assistant"})
    for piece in state.pool.stream(served, messages, max_tokens, req.temperature, req.top_p, req.seed):
        if isinstance(piece, Completion):
            # Logged before the final chunk: a client that saw [DONE] has a logged request to give feedback on.
            _record(state, rid, req, served, piece, time.perf_counter() - start, key_id, True)
            yield chunk({}, piece.finish_reason)
        else:
            yield chunk({"content": piece})
    yield "data: [DONE]\n\n"


def _record(state: ServeState, rid: str, req: ChatRequest, served: Served, done: Completion, seconds: float,
            key_id: int | None, stream: bool) -> None:
    r, metrics = served.record, state.metrics
    write_request(state.registry.engine, RequestLog(
        rid, req.model, r.id, r.name, r.version, [m.model_dump() for m in req.messages], done.text,
        done.prompt_tokens, done.completion_tokens, seconds * 1000, stream, key_id))
    metrics.requests.labels(r.ref, "ok").inc()
    metrics.latency.labels(r.ref).observe(seconds)
    metrics.tokens.labels(r.ref, "prompt").inc(done.prompt_tokens)
    metrics.tokens.labels(r.ref, "completion").inc(done.completion_tokens)
