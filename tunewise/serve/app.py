"""The HTTP server: OpenAI-compatible chat completions (plain and streamed), models, feedback, health, metrics.

Every request resolves its `model` through the registry, so a promotion or rollback is served by the next
request, without a restart. Errors come back in OpenAI's shape: {"error": {"message", "type", "code"}}."""

from __future__ import annotations

from fastapi import FastAPI

from tunewise.config import OperateConfig
from tunewise.registry import Registry
from tunewise.serve.chat import router as chat_router
from tunewise.serve.deps import ServeState
from tunewise.serve.engine import ModelPool
from tunewise.serve.errors import APIError, add_error_handlers
from tunewise.serve.limits import BodySizeLimit
from tunewise.serve.metrics import Metrics
from tunewise.serve.routes import feedback, health, models

ROUTERS = (health, models, chat_router, feedback)


def create_app(cfg: OperateConfig, registry: Registry, pool: ModelPool | None = None) -> FastAPI:
    """The server for `registry`'s models; `pool` holds them in memory (a new one unless given)."""
    app = FastAPI(title="tunewise", docs_url=None, redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.serve.max_request_bytes)
    add_error_handlers(app)
    pool = pool or ModelPool(max_batch_size=cfg.serve.max_batch_size)
    metrics = Metrics()
    pool.batcher.observe = metrics.batch_size.observe
    app.state.serve = ServeState(cfg, registry, pool, metrics)
    app.state.pool, app.state.metrics = pool, metrics
    for router in ROUTERS:
        app.include_router(router)
    return app


__all__ = ["APIError", "create_app"]
