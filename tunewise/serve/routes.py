"""The small routes: health, Prometheus metrics, the model list and feedback. Chat completions: serve/chat.py."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tunewise.serve.deps import ApiKey, MonitoringKey, State
from tunewise.serve.errors import APIError
from tunewise.serve.log import request_owner, write_feedback
from tunewise.serve.schemas import FeedbackRequest

health = APIRouter()
models = APIRouter()
feedback = APIRouter()


@health.get("/healthz")
def healthz(state: State) -> dict:
    aliases = state.registry.aliases()  # touches the database: a dead database is an unhealthy server
    return {"status": "ok", "production": aliases["production"], "loaded_adapters": state.pool.loaded()}


@health.get("/metrics")
def prometheus(state: State, _key: MonitoringKey) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@models.get("/v1/models")
def list_models(state: State, _key: MonitoringKey) -> dict:
    aliases = state.registry.aliases()
    by_id = {m.id: m for m in state.registry.models()}
    data = [{"id": a, "object": "model", "owned_by": "tunewise", "root": by_id[mid].ref}
            for a, mid in aliases.items() if mid is not None]
    data += [{"id": m.ref, "object": "model", "owned_by": "tunewise", "created": int(m.created_at.timestamp())}
             for m in by_id.values()]
    return {"object": "list", "data": data}


@feedback.post("/v1/feedback")
def post_feedback(fb: FeedbackRequest, state: State, key_id: ApiKey) -> dict:
    engine = state.registry.engine
    exists, owner = request_owner(engine, fb.request_id)
    if not exists:
        raise APIError(404, f"request_id: {fb.request_id!r} is not a request this server answered",
                       code="request_not_found")
    if state.cfg.serve.auth and owner != key_id:
        raise APIError(403, "request_id: feedback is accepted only from the API key that made the request",
                       "permission_error", "not_your_request")
    feedback_id = write_feedback(engine, fb.request_id, fb.rating, fb.correction)
    state.metrics.feedback.labels(str(fb.rating)).inc()
    return {"id": feedback_id, "object": "feedback", "request_id": fb.request_id}
