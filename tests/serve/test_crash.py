"""SIGKILL the server during a burst of requests and feedback: every acknowledged row must survive, whole."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import yaml
from sqlalchemy import select

from tests.fixtures.runs import fake_run
from tunewise.config import RegistryConfig
from tunewise.registry import Registry
from tunewise.registry.schema import feedback, requests
from tunewise.serve.auth import create_key

LAUNCH = "import sys; from tunewise.cli import app; sys.argv[0] = 'tunewise'; app()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(config, port):
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", "--config", str(config), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.getcwd())
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def client_loop(url, key, acked_requests, acked_feedback, stop, i):
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        n = 0
        while not stop.is_set() and n < 200:  # bounded: the loop ends by itself
            n += 1
            try:
                r = c.post("/v1/chat/completions", json={"model": "production", "max_tokens": 3, "messages": [
                    {"role": "user", "content": f"client {i} says the match was good {n}"}]})
                if r.status_code != 200:
                    continue
                rid = r.json()["id"]
                acked_requests.append(rid)
                f = c.post("/v1/feedback", json={"request_id": rid, "rating": 1, "correction": f"sport {i}"})
                if f.status_code == 200:
                    acked_feedback.append(f.json()["id"])
            except httpx.HTTPError:
                return


def test_sigkill_during_burst_loses_no_acknowledged_row(tmp_path, tiny_model_dir, tiny_adapters):
    ws = tmp_path / "ws"
    reg = Registry(RegistryConfig(workspace=ws))
    reg.register_run(fake_run(tmp_path, "clf", [True] * 40, adapter=tiny_adapters["clf"],
                              base_path=str(tiny_model_dir)))
    reg.promote()
    key = create_key(reg.engine, "burst")
    config = tmp_path / "operate.yaml"
    config.write_text(yaml.safe_dump({"registry": {"workspace": str(ws)}, "serve": {"max_tokens": 4}}))
    port = free_port()
    proc = start_server(config, port)
    acked_requests, acked_feedback, stop = [], [], threading.Event()
    threads = [threading.Thread(target=client_loop, args=(f"http://127.0.0.1:{port}", key, acked_requests,
                                                          acked_feedback, stop, i)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(acked_feedback) < 15 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-burst: requests and feedback are in flight
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked_feedback) >= 15

    proc = start_server(config, port)  # the server comes back on the same database
    try:
        with reg.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            logged = {r["id"]: r for r in conn.execute(select(requests)).mappings()}
            fb = {r["id"]: r for r in conn.execute(select(feedback)).mappings()}
        assert set(acked_requests) <= set(logged)
        assert set(acked_feedback) <= set(fb)
        for r in logged.values():  # none half-written
            assert r["model_version"] == 1 and r["completion_tokens"] >= 1 and r["response"] is not None
            assert r["messages"][0]["content"].startswith("client ")
        for f in fb.values():
            assert f["request_id"] in logged and f["correction"].startswith("sport ")
        r = httpx.post(f"http://127.0.0.1:{port}/v1/feedback", headers={"Authorization": f"Bearer {key}"},
                       json={"request_id": acked_requests[0], "rating": -1}, timeout=30)
        assert r.status_code == 200
    finally:
        proc.kill()
        proc.wait()
