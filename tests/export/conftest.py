from tests.serve.conftest import tiny_adapters  # noqa: F401  (shared fixture: real adapters on the tiny model)
