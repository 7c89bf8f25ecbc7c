"""Request and feedback logs are redacted before they reach the database file."""

import sqlite3

from tests.fixtures.runs import fake_run
from tunewise.config import RegistryConfig
from tunewise.registry import Registry
from tunewise.serve.log import RequestLog, write_feedback, write_request

OPENAI = "sk-proj-Xy7Qb2LmN9vT4kR8sW1zA5cD3eF6gH0jKl"
HF = "hf_QwErTyUiOpAsDfGhJkLzXcVbNm12345678"


def test_keys_in_prompts_answers_and_feedback_never_reach_the_disk(tmp_path):
    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    reg.register_run(fake_run(tmp_path, "clf", [True] * 10))
    prompt = f"why does `export OPENAI_API_KEY={OPENAI}` fail? my HF token is {HF}"
    write_request(reg.engine, RequestLog("req-1", "production", 1, "clf", 1, [{"role": "user", "content": prompt}],
                                         f"Revoke {HF} now and mail ana@example.com", 12, 5, 3.0, False, None))
    write_feedback(reg.engine, "req-1", 1, f"the key was {OPENAI}")
    reg.engine.dispose()

    files = list((tmp_path / "ws").rglob("*.db*"))
    assert files, "the registry's SQLite file was not found"
    on_disk = b"".join(f.read_bytes() for f in files)
    for secret in (OPENAI, HF, "ana@example.com"):
        assert secret.encode() not in on_disk
    db = next(f for f in files if f.suffix == ".db")
    with sqlite3.connect(db) as conn:
        row = conn.execute("select messages, response, redacted from requests").fetchone()
        correction = conn.execute("select correction from feedback").fetchone()[0]
    messages, response, redacted = row
    assert "export OPENAI_API_KEY=<SECRET>" in messages and "my HF token is <SECRET>" in messages
    assert response == "Revoke <SECRET> now and mail <EMAIL>" and redacted == 1
    assert correction == "the key was <SECRET>"
