import json

import pytest

from tests.fixtures.runs import fake_run
from tunewise.config import MonitorConfig, OperateConfig, RegistryConfig
from tunewise.monitor import monitor
from tunewise.monitor.feedback import export_feedback
from tunewise.registry import Registry
from tunewise.serve.log import RequestLog, write_feedback, write_request

SPORT = [(f"the team won the match {i} and the game was great", "sport") for i in range(30)]
SPORT += [(f"the team lost the game {i}", "sport") for i in range(30)]
BANK = [(f"the bank profit and market shares went up {i}", "business") for i in range(60)]


@pytest.fixture(scope="module")
def embedder():
    from tunewise.monitor.embed import Embedder

    return Embedder()


@pytest.fixture
def reg(tmp_path):
    reg = Registry(RegistryConfig(workspace=tmp_path / "ws"))
    reg.register_run(fake_run(tmp_path, "clf", [True] * 60, rows=SPORT + BANK))
    reg.promote()
    return reg


def log_traffic(reg, texts, answers):
    for i, (t, a) in enumerate(zip(texts, answers)):
        write_request(reg.engine, RequestLog(f"req-{len(t)}-{i}-{hash(t)}", "production", 1, "clf", 1,
                                             [{"role": "user", "content": t}], a, 10, 1, 5.0, False, None))


CFG = OperateConfig(monitor=MonitorConfig(min_requests=20, permutations=200))


def test_in_distribution_traffic_is_not_flagged(reg, tmp_path, embedder):
    log_traffic(reg, [t for t, _ in SPORT[::2] + BANK[::2]], [lab for _, lab in SPORT[::2] + BANK[::2]])
    res = monitor(CFG, reg, tmp_path / "mon", embedder)
    assert res.traffic == 60 and not res.retrain_recommended, res.checks
    assert json.loads((tmp_path / "mon" / "monitor.json").read_text())["verdict"] == "no drift detected"


def test_shifted_traffic_recommends_retraining_with_a_report(reg, tmp_path, embedder):
    texts = [f"i love this film and the music, the star deserves an award {i}! it was very nice, "
             f"happy happy movie, great song and great film" for i in range(40)]
    log_traffic(reg, texts, ["entertainment"] * 40)
    res = monitor(CFG, reg, tmp_path / "mon", embedder)
    by = {c.name: c for c in res.checks}
    assert res.retrain_recommended and "retrain recommended" in res.verdict
    assert by["embedding MMD p-value"].drift and by["input length PSI"].drift and by["prediction PSI"].drift
    html = res.report.read_text()
    assert "retrain recommended" in html and html.count("data:image/png;base64,") == 4


def test_too_little_traffic_gives_no_verdict(reg, tmp_path):
    log_traffic(reg, ["hello"] * 3, ["sport"] * 3)
    res = monitor(CFG, reg, tmp_path / "mon", embedder=lambda _: pytest.fail("no embedding needed"))
    assert not res.retrain_recommended and "not enough traffic" in res.verdict


def test_feedback_export_turns_corrections_into_dataset_rows(reg, tmp_path):
    from tunewise.config import DataConfig, RunConfig
    from tunewise.data import prepare

    log_traffic(reg, ["the bank profit", "the match", "hello world"], ["sport", "sport", "sport"])
    ids = sorted(r for r in _request_ids(reg))
    write_feedback(reg.engine, ids[0], -1, "business")
    write_feedback(reg.engine, ids[1], 1, None)  # a thumbs-up without a correction is not a training row
    write_feedback(reg.engine, ids[2], -1, "  tech ")
    out = tmp_path / "fb.jsonl"
    res = export_feedback(reg.engine, out, mark_exported=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert res.rows == 2 and {r["label"] for r in rows} == {"business", "tech"}
    assert all(r["messages"][-1] == {"role": "assistant", "content": r["label"]} for r in rows)
    assert export_feedback(reg.engine, tmp_path / "again.jsonl", only_new=True).rows == 0
    # the data stage reads them like any dataset file
    # (the file twice, dedup off: the data doctor would otherwise collapse the second copy)
    cfg = RunConfig(data=DataConfig(paths=[out, out], split={"val": 0, "test": 0},
                                    dedup={"exact": False, "near": False}))
    assert sorted(r.label for r in prepare(cfg).train) == ["business", "business", "tech", "tech"]


def _request_ids(reg):
    from sqlalchemy import select

    from tunewise.registry.schema import requests

    with reg.engine.connect() as conn:
        return conn.execute(select(requests.c.id)).scalars().all()
