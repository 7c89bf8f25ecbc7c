"""What the routes share (ServeState, one per app) and the dependencies that guard them: the API key and the
request limits. A route asks for them by type: `state: State`, `key_id: ApiKey`, `max_tokens: MaxTokens`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from tunewise.config import OperateConfig, TaskConfig
from tunewise.errors import ConfigError
from tunewise.registry import Registry, RegistryError
from tunewise.serve.auth import check_key
from tunewise.serve.engine import ModelPool, Served
from tunewise.serve.errors import APIError
from tunewise.serve.metrics import Metrics
from tunewise.serve.schemas import ChatRequest


@dataclass
class ServeState:
    cfg: OperateConfig
    registry: Registry
    pool: ModelPool
    metrics: Metrics
    framing: dict[int, tuple[TaskConfig, list[str] | None]] = field(default_factory=dict)
    """model id -> its task and labels (immutable once registered, so read from the registry once)"""

    def resolve(self, ref: str) -> Served:
        """The registered model `ref` names (alias, name or name:vN), loaded and ready to generate."""
        try:
            record = self.registry.model(ref)
        except ConfigError as err:
            raise APIError(400, str(err), code="invalid_model") from None
        except RegistryError as err:
            raise APIError(404, str(err), code="model_not_found") from None
        if record.id not in self.framing:
            task = TaskConfig.model_validate(self.registry.run_record(record.run_id)["config"].get("task", {}))
            self.framing[record.id] = (task, self.registry.dataset_record(record.dataset_hash)["card"].get("labels"))
        served = self.pool.prepare(record, *self.framing[record.id])
        self.metrics.adapters.set(len(self.pool.loaded()))
        return served


def serve_state(request: Request) -> ServeState:
    return request.app.state.serve


State = Annotated[ServeState, Depends(serve_state)]


def api_key(request: Request, state: State) -> int | None:
    """The caller's key id; None when the server runs without auth."""
    if not state.cfg.serve.auth:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' (tunewise keys create NAME)",
                       "authentication_error", "missing_api_key")
    key_id = check_key(state.registry.engine, key.strip())
    if key_id is None:
        raise APIError(401, "invalid or revoked API key", "authentication_error", "invalid_api_key")
    return key_id


ApiKey = Annotated[int | None, Depends(api_key)]


def monitoring_key(request: Request, state: State) -> int | None:
    """The key for /metrics and the model list: asked for like everywhere else unless serve.public_metrics."""
    if state.cfg.serve.public_metrics:
        return None
    return api_key(request, state)


MonitoringKey = Annotated[int | None, Depends(monitoring_key)]


def chat_limits(req: ChatRequest, state: State) -> int:
    """The request's max_tokens, once it is within this server's limits."""
    limit = state.cfg.serve
    asked = req.max_completion_tokens or req.max_tokens or limit.max_tokens
    if asked > limit.max_tokens:
        raise APIError(400, f"max_tokens: {asked} is over this server's limit of {limit.max_tokens}",
                       code="max_tokens_too_large")
    if len(req.messages) > limit.max_messages:
        raise APIError(400, f"messages: {len(req.messages)} is over the limit of {limit.max_messages}")
    if not any(m.role == "user" for m in req.messages):
        raise APIError(400, "messages: needs at least one user message")
    return asked


MaxTokens = Annotated[int, Depends(chat_limits)]
