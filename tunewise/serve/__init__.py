"""Serving stage: an OpenAI-compatible HTTP server over the registry. Entry point: `serve(cfg)`."""

from __future__ import annotations

import uvicorn

from tunewise.config import OperateConfig
from tunewise.registry import open_registry
from tunewise.serve.app import create_app


def serve(cfg: OperateConfig) -> None:
    """Run the server until interrupted (uvicorn, one process: the models live in its memory)."""
    app = create_app(cfg, open_registry(cfg.registry))
    uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level="info", timeout_graceful_shutdown=5)


__all__ = ["create_app", "serve"]
