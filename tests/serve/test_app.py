import json

import pytest
from sqlalchemy import select

from tunewise.registry.schema import feedback, requests
from tunewise.serve.auth import create_key, revoke_key

HELLO = {"model": "production", "messages": [{"role": "user", "content": "the match was great"}], "max_tokens": 5}


def rows(reg, table):
    with reg.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def test_chat_completion_answers_and_logs(stack):
    client, reg, _ = stack
    r = client.post("/v1/chat/completions", json=HELLO)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "clf:v1"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert 1 <= body["usage"]["completion_tokens"] <= 5
    [logged] = rows(reg, requests)
    assert logged["id"] == body["id"] == r.headers["x-request-id"]
    assert (logged["model_name"], logged["model_version"], logged["model_ref"]) == ("clf", 1, "production")
    assert logged["completion_tokens"] == body["usage"]["completion_tokens"] and logged["latency_ms"] > 0
    assert logged["messages"] == HELLO["messages"] and logged["response"] == body["choices"][0]["message"]["content"]


def test_models_by_name_and_alias_change_without_restart(stack):
    client, reg, _ = stack
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["production", "candidate", "clf:v1", "other:v1"]
    a = client.post("/v1/chat/completions", json=HELLO).json()
    b = client.post("/v1/chat/completions", json={**HELLO, "model": "other"}).json()
    assert b["model"] == "other:v1"
    assert a["choices"][0]["message"]["content"] != b["choices"][0]["message"]["content"]  # different adapters
    reg.promote("other", force=True, reason="test")
    c = client.post("/v1/chat/completions", json=HELLO).json()
    assert c["model"] == "other:v1" and c["choices"][0]["message"] == b["choices"][0]["message"]
    reg.rollback()
    assert client.post("/v1/chat/completions", json=HELLO).json()["model"] == "clf:v1"
    assert len(client.app.state.pool.bases) == 1  # two adapters, one base model in memory


def test_streaming_matches_plain_answer(stack):
    client, reg, _ = stack
    plain = client.post("/v1/chat/completions", json=HELLO).json()
    with client.stream("POST", "/v1/chat/completions", json={**HELLO, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln.removeprefix("data: ")) for ln in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    logged = [r for r in rows(reg, requests) if r["stream"]]
    assert len(logged) == 1 and logged[0]["id"] == chunks[0]["id"]


@pytest.mark.parametrize("headers,code", [({}, "missing_api_key"),
                                          ({"Authorization": "Bearer nope"}, "invalid_api_key"),
                                          ({"Authorization": "Basic abc"}, "missing_api_key")])
def test_requests_without_a_valid_key_are_refused(stack, headers, code):
    client, _, _ = stack
    del client.headers["Authorization"]
    r = client.post("/v1/chat/completions", json=HELLO, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == code
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 401 and client.get("/v1/models").status_code == 401


def test_public_metrics_serves_metrics_and_models_without_a_key(tmp_path, stack):
    from fastapi.testclient import TestClient

    from tunewise.config import OperateConfig, ServeConfig
    from tunewise.serve import create_app

    _, reg, _ = stack
    cfg = OperateConfig(registry=reg.cfg, serve=ServeConfig(public_metrics=True))
    client = TestClient(create_app(cfg, reg))
    assert client.get("/metrics").status_code == 200 and client.get("/v1/models").status_code == 200
    assert client.post("/v1/chat/completions", json=HELLO).status_code == 401  # the rest still needs a key


def test_revoked_key_and_hash_at_rest(stack):
    client, reg, key = stack
    with reg.engine.connect() as conn:
        stored = conn.exec_driver_sql("select key_hash from api_keys").scalars().all()
    assert key not in stored and len(stored[0]) == 64
    revoke_key(reg.engine, "tests")
    assert client.post("/v1/chat/completions", json=HELLO).status_code == 401


@pytest.mark.parametrize("change,status,needle", [
    ({"model": "../../etc/passwd"}, 400, "not a valid model name"),
    ({"model": "clf/../x"}, 400, "not a valid model name"),
    ({"model": "missing"}, 404, "not registered"),
    ({"max_tokens": 9}, 400, "over this server's limit of 8"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ({"messages": [{"role": "system", "content": "x"}]}, 400, "at least one user message"),
    ({"n": 2}, 400, "n:"),
    ({"temperature": 5}, 400, "temperature"),
])
def test_bad_requests_get_clear_4xx(stack, change, status, needle):
    client, reg, _ = stack
    r = client.post("/v1/chat/completions", json={**HELLO, **change})
    assert r.status_code == status and needle in r.json()["error"]["message"], r.text
    assert rows(reg, requests) == []


def test_body_size_limit_and_non_json(stack):
    client, _, _ = stack
    big = {**HELLO, "messages": [{"role": "user", "content": "word " * 2000}]}
    r = client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_feedback_is_stored_and_checked(stack):
    client, reg, _ = stack
    rid = client.post("/v1/chat/completions", json=HELLO).json()["id"]
    r = client.post("/v1/feedback", json={"request_id": rid, "rating": -1, "correction": "sport"})
    assert r.status_code == 200, r.text
    [fb] = rows(reg, feedback)
    assert (fb["request_id"], fb["rating"], fb["correction"]) == (rid, -1, "sport")
    assert client.post("/v1/feedback", json={"request_id": "chatcmpl-x", "rating": 1}).status_code == 404
    assert client.post("/v1/feedback", json={"request_id": rid, "rating": 7}).status_code == 400
    other = create_key(reg.engine, "someone-else")
    r = client.post("/v1/feedback", json={"request_id": rid, "rating": 1}, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 403
    metrics = client.get("/metrics").text
    assert 'tunewise_feedback_total{rating="-1"} 1.0' in metrics
    assert 'tunewise_requests_total{model="clf:v1",status="ok"} 1.0' in metrics
    assert "tunewise_batch_size_count 1.0" in metrics  # one generate call so far
