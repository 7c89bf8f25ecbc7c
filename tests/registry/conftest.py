import os

import pytest

PG_ENV = "TUNEWISE_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path):
    """A fresh registry on SQLite (a file in tmp_path) and on PostgreSQL (the URL .ci/run exports)."""
    from tunewise.config import RegistryConfig
    from tunewise.registry import Registry
    from tunewise.registry.schema import metadata

    if request.param == "sqlite":
        yield Registry(RegistryConfig(workspace=tmp_path / "ws"))
        return
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (set by .ci/run, which installs and starts PostgreSQL)")
    from tunewise.registry.db import make_engine

    engine = make_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    reg = Registry(RegistryConfig(workspace=tmp_path / "ws", url=url), engine)
    yield reg
    engine.dispose()
