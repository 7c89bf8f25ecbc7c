"""Engine setup: SQLite in the workspace by default, PostgreSQL (or any SQLAlchemy URL) for teams."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError

from tunewise.config import RegistryConfig
from tunewise.errors import ConfigError
from tunewise.registry.schema import metadata

ENV_URL = "TUNEWISE_REGISTRY_URL"


def registry_url(cfg: RegistryConfig) -> str:
    if cfg.url:
        return cfg.url
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL]
    return f"sqlite:///{(Path(cfg.workspace) / 'registry.db').resolve()}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL: readers never block the writer; synchronous=FULL: a committed transaction survives a crash, so a
    # request or feedback row the server acknowledged is on disk. busy_timeout: concurrent writers wait.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        metadata.create_all(engine)
    except ArgumentError as err:
        raise ConfigError(f"registry.url: not a database URL ({err})") from None
    except OperationalError as err:
        raise ConfigError(f"registry at {engine.url.render_as_string(hide_password=True)}: cannot connect "
                          f"({str(err.orig).strip().splitlines()[0]})") from None
    return engine
