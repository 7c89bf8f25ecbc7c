"""The HTTP server: OpenAI-compatible chat completions (plain and streamed), models, feedback, health, metrics.

Every request resolves its `model` through the registry, so a promotion or rollback is served by the next
request, without a restart. Errors come back in OpenAI's shape: {"error": {"message", "type", "code"}}."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunewise.config import OperateConfig, TaskConfig
from tunewise.errors import ConfigError
from tunewise.registry import Registry, RegistryError
from tunewise.registry.store import ALIASES
from tunewise.serve.auth import check_key
from tunewise.serve.engine import Completion, ModelPool, Served
from tunewise.serve.limits import BodySizeLimit
from tunewise.serve.log import RequestLog, request_owner, write_feedback, write_request
from tunewise.serve.schemas import ChatRequest, FeedbackRequest


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


def _error(status: int, message: str, type_: str, code: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status_code=status)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("tunewise_requests", "chat completions", ["model", "status"], registry=self.registry)
        self.latency = Histogram("tunewise_request_seconds", "chat completion latency", ["model"],
                                 registry=self.registry)
        self.tokens = Counter("tunewise_tokens", "tokens processed", ["model", "kind"], registry=self.registry)
        self.feedback = Counter("tunewise_feedback", "feedback received", ["rating"], registry=self.registry)
        self.adapters = Gauge("tunewise_loaded_adapters", "adapters in memory", registry=self.registry)
        self.batch_size = Histogram("tunewise_batch_size", "requests per generate call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


def create_app(cfg: OperateConfig, registry: Registry, pool: ModelPool | None = None) -> FastAPI:
    app = FastAPI(title="tunewise", docs_url=None, redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.serve.max_request_bytes)
    pool = pool or ModelPool(max_batch_size=cfg.serve.max_batch_size)
    metrics = Metrics()
    pool.batcher.observe = metrics.batch_size.observe
    framing: dict[int, tuple[TaskConfig, list[str] | None]] = {}  # model id -> task (immutable once registered)
    engine = registry.engine

    @app.exception_handler(APIError)
    async def _api_error(_req, err: APIError):
        return _error(err.status, err.message, err.type, err.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, err: RequestValidationError):
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
        return _error(400, f"{where}: {e['msg']}", "invalid_request_error", "invalid_field")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail), "invalid_request_error", None)

    def api_key(request: Request) -> int | None:
        if not cfg.serve.auth:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' (tunewise keys create NAME)",
                           "authentication_error", "missing_api_key")
        key_id = check_key(engine, key.strip())
        if key_id is None:
            raise APIError(401, "invalid or revoked API key", "authentication_error", "invalid_api_key")
        return key_id

    def resolve(ref: str) -> Served:
        try:
            record = registry.model(ref)
        except ConfigError as err:
            raise APIError(400, str(err), code="invalid_model") from None
        except RegistryError as err:
            raise APIError(404, str(err), code="model_not_found") from None
        if record.id not in framing:
            task = TaskConfig.model_validate(registry.run_record(record.run_id)["config"].get("task", {}))
            framing[record.id] = (task, registry.dataset_record(record.dataset_hash)["card"].get("labels"))
        served = pool.prepare(record, *framing[record.id])
        metrics.adapters.set(len(pool.loaded()))
        return served

    def limits(req: ChatRequest) -> int:
        asked = req.max_completion_tokens or req.max_tokens or cfg.serve.max_tokens
        if asked > cfg.serve.max_tokens:
            raise APIError(400, f"max_tokens: {asked} is over this server's limit of {cfg.serve.max_tokens}",
                           code="max_tokens_too_large")
        if len(req.messages) > cfg.serve.max_messages:
            raise APIError(400, f"messages: {len(req.messages)} is over the limit of {cfg.serve.max_messages}")
        if not any(m.role == "user" for m in req.messages):
            raise APIError(400, "messages: needs at least one user message")
        return asked

    def record_request(rid: str, req: ChatRequest, served: Served, done: Completion, seconds: float,
                       key_id: int | None, stream: bool) -> None:
        r = served.record
        write_request(engine, RequestLog(
            rid, req.model, r.id, r.name, r.version, [m.model_dump() for m in req.messages], done.text,
            done.prompt_tokens, done.completion_tokens, seconds * 1000, stream, key_id))
        metrics.requests.labels(r.ref, "ok").inc()
        metrics.latency.labels(r.ref).observe(seconds)
        metrics.tokens.labels(r.ref, "prompt").inc(done.prompt_tokens)
        metrics.tokens.labels(r.ref, "completion").inc(done.completion_tokens)

    @app.get("/healthz")
    def healthz() -> dict:
        aliases = registry.aliases()  # touches the database: a dead database is an unhealthy server
        return {"status": "ok", "production": aliases["production"], "loaded_adapters": pool.loaded()}

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def list_models(_key: int | None = Depends(api_key)) -> dict:
        aliases = registry.aliases()
        by_id = {m.id: m for m in registry.models()}
        data = [{"id": a, "object": "model", "owned_by": "tunewise", "root": by_id[mid].ref}
                for a, mid in aliases.items() if mid is not None]
        data += [{"id": m.ref, "object": "model", "owned_by": "tunewise", "created": int(m.created_at.timestamp())}
                 for m in by_id.values()]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, key_id: int | None = Depends(api_key)):
        max_tokens = limits(req)
        served = resolve(req.model)
        rid = "chatcmpl-" + uuid.uuid4().hex
        messages = [m.model_dump() for m in req.messages]
        if req.stream:
            return StreamingResponse(_sse(rid, req, served, messages, max_tokens, key_id),
                                     media_type="text/event-stream", headers={"x-request-id": rid})
        start = time.perf_counter()
        try:
            done = pool.complete(served, messages, max_tokens, req.temperature, req.top_p, req.seed)
        except Exception:
            metrics.requests.labels(served.record.ref, "error").inc()
            raise
        record_request(rid, req, served, done, time.perf_counter() - start, key_id, False)
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": int(time.time()), "model": served.record.ref,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                         "finish_reason": done.finish_reason}],
            "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                      "total_tokens": done.prompt_tokens + done.completion_tokens}},
            headers={"x-request-id": rid})

    def _sse(rid, req, served: Served, messages, max_tokens, key_id) -> Iterator[str]:
        def chunk(delta: dict, finish: str | None = None) -> str:
            body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": served.record.ref, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(body)}\n\n"

        start = time.perf_counter()
        yield chunk({"role": "assistant"})
        for piece in pool.stream(served, messages, max_tokens, req.temperature, req.top_p, req.seed):
            if isinstance(piece, Completion):
                # Logged before the final chunk: a client that saw [DONE] has a logged request to give feedback on.
                record_request(rid, req, served, piece, time.perf_counter() - start, key_id, True)
                yield chunk({}, piece.finish_reason)
            else:
                yield chunk({"content": piece})
        yield "data: [DONE]\n\n"

    @app.post("/v1/feedback")
    def post_feedback(fb: FeedbackRequest, key_id: int | None = Depends(api_key)) -> dict:
        exists, owner = request_owner(engine, fb.request_id)
        if not exists:
            raise APIError(404, f"request_id: {fb.request_id!r} is not a request this server answered",
                           code="request_not_found")
        if cfg.serve.auth and owner != key_id:
            raise APIError(403, "request_id: feedback is accepted only from the API key that made the request",
                           "permission_error", "not_your_request")
        feedback_id = write_feedback(engine, fb.request_id, fb.rating, fb.correction)
        metrics.feedback.labels(str(fb.rating)).inc()
        return {"id": feedback_id, "object": "feedback", "request_id": fb.request_id}

    app.state.pool, app.state.metrics = pool, metrics
    return app


__all__ = ["ALIASES", "APIError", "create_app"]
