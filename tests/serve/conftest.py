import pytest

from tests.fixtures.runs import fake_run, tiny_adapter

ALL_RIGHT = [True] * 40


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {name: tiny_adapter(tiny_model_dir, root / name, seed) for name, seed in (("clf", 1), ("other", 2))}


@pytest.fixture
def stack(tmp_path, tiny_model_dir, tiny_adapters):
    """A registry with two real adapters on the tiny model (clf is production), an app and an API key."""
    from fastapi.testclient import TestClient

    from tunewise.config import OperateConfig, RegistryConfig, ServeConfig
    from tunewise.registry import Registry
    from tunewise.serve import create_app
    from tunewise.serve.auth import create_key

    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    for name in ("clf", "other"):
        reg.register_run(fake_run(tmp_path, name, ALL_RIGHT, adapter=tiny_adapters[name],
                                  base_path=str(tiny_model_dir)))
    reg.promote("clf:v1")
    cfg = OperateConfig(registry=reg.cfg, serve=ServeConfig(max_tokens=8, max_request_bytes=4000))
    client = TestClient(create_app(cfg, reg))
    key = create_key(reg.engine, "tests")
    client.headers["Authorization"] = f"Bearer {key}"
    return client, reg, key
