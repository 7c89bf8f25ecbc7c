"""The registry's tables (SQLAlchemy Core): one schema for SQLite and PostgreSQL.

Lineage lives in foreign keys: a model points at its run, its dataset version and its parent model; a dataset
version points at its parent. Alias changes are an append-only event log, so every promotion and rollback
is recorded with its reason and the gate's numbers, and the current aliases can always be re-derived."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _created() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow)


datasets = Table(
    "datasets", metadata,
    Column("content_hash", String(64), primary_key=True),
    Column("parent_hash", String(64), ForeignKey("datasets.content_hash"), nullable=True),
    Column("source", Text, nullable=False),  # what made it: a run's config, or "retrain: + N corrections"
    Column("card", JSON, nullable=False),  # counts, labels, label distribution (the data stage's summary)
    Column("path", Text, nullable=False),  # frozen copy of the splits inside the workspace
    _created(),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("path", Text, nullable=False),
    Column("config", JSON, nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("dataset_hash", String(64), ForeignKey("datasets.content_hash"), nullable=False),
    _created(),
)

models = Table(
    "models", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # "adapter" (PEFT) or "full" (full weights: full fine-tune, soup)
    Column("artifact_path", Text, nullable=False),
    Column("base_model", JSON, nullable=False),  # {"id", "sha256", "path"}
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("dataset_hash", String(64), ForeignKey("datasets.content_hash"), nullable=False),
    Column("parent_id", Integer, ForeignKey("models.id"), nullable=True),
    Column("metrics", JSON, nullable=False),
    Column("test_set_hash", String(64), nullable=False),
    Column("test_scores", JSON, nullable=False),  # {"keys": [...], "scores": [...]} per test example
    _created(),
    UniqueConstraint("name", "version"),
)

alias_events = Table(
    "alias_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alias", String(32), nullable=False),
    Column("action", String(16), nullable=False),  # promote | rollback | rejected | candidate
    Column("model_id", Integer, ForeignKey("models.id"), nullable=True),
    Column("previous_model_id", Integer, ForeignKey("models.id"), nullable=True),
    Column("forced", Boolean, nullable=False, default=False),
    Column("reason", Text, nullable=True),
    Column("gate", JSON, nullable=True),
    _created(),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("revoked", Boolean, nullable=False, default=False),
    _created(),
)

requests = Table(
    "requests", metadata,
    Column("id", String(64), primary_key=True),
    Column("model_ref", String(100), nullable=False),  # what the client asked for ("production", a name)
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("model_name", String(64), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("messages", JSON, nullable=False),  # PII-redacted (tunewise.data.pii) where `redacted` is true
    Column("response", Text, nullable=False),
    Column("redacted", Boolean, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("api_key_id", Integer, nullable=True),
    _created(),
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), ForeignKey("requests.id"), nullable=False),
    Column("rating", Integer, nullable=False),
    Column("correction", Text, nullable=True),
    Column("exported", Boolean, nullable=False, default=False),
    _created(),
)
