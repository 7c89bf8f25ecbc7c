"""Monitoring stage: recent traffic against the production model's training data.
Entry point: `monitor(cfg, registry, out_dir) -> MonitorResult` (also writes monitor.html and monitor.json)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from tunewise.config import OperateConfig
from tunewise.evaluate.metrics import parse_label
from tunewise.monitor.drift import binned_shares, mmd_test, psi, shares
from tunewise.monitor.embed import Embedder
from tunewise.monitor.report import drift_plots, write_monitor_report
from tunewise.registry import Registry
from tunewise.registry.schema import feedback as feedback_table
from tunewise.registry.schema import requests


@dataclass
class Check:
    name: str
    value: float
    threshold: float
    drift: bool
    detail: str


@dataclass
class MonitorResult:
    model: str
    traffic: int
    reference: int
    checks: list[Check]
    retrain_recommended: bool
    verdict: str
    feedback: dict
    report: Path | None = None
    plots: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("plots")
        d["report"] = str(self.report) if self.report else None
        return d


def _last_user(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def training_sample(registry: Registry, dataset_hash: str, limit: int, seed: int = 0) -> tuple[list[str], list]:
    path = Path(registry.dataset_record(dataset_hash)["path"]) / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    rows = rows[:limit]
    return [_last_user(r["messages"]) for r in rows], [r.get("label") or r["messages"][-1]["content"] for r in rows]


def recent_traffic(registry: Registry, model_name: str, window: int) -> tuple[list[str], list[str]]:
    q = (select(requests.c.messages, requests.c.response).where(requests.c.model_name == model_name)
         .order_by(requests.c.created_at.desc()).limit(window))
    with registry.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [_last_user(m) for m, _ in rows], [r for _, r in rows]


def feedback_stats(registry: Registry, model_name: str) -> dict:
    q = (select(feedback_table.c.rating, func.count(), func.count(feedback_table.c.correction))
         .join(requests, feedback_table.c.request_id == requests.c.id).where(requests.c.model_name == model_name)
         .group_by(feedback_table.c.rating))
    with registry.engine.connect() as conn:
        rows = conn.execute(q).all()
    total = sum(n for _, n, _ in rows)
    return {"total": total, "negative": sum(n for r, n, _ in rows if r < 0),
            "corrections": sum(c for _, _, c in rows)}


def monitor(cfg: OperateConfig, registry: Registry, out_dir: Path, embedder=None) -> MonitorResult:
    m = cfg.monitor
    prod = registry.model("production")
    labels = registry.dataset_record(prod.dataset_hash)["card"].get("labels")
    ref_texts, ref_answers = training_sample(registry, prod.dataset_hash, m.window)
    texts, responses = recent_traffic(registry, prod.name, m.window)
    fb = feedback_stats(registry, prod.name)
    if len(texts) < m.min_requests:
        result = MonitorResult(prod.ref, len(texts), len(ref_texts), [], False,
                               f"not enough traffic: {len(texts)} requests (monitor.min_requests={m.min_requests})",
                               fb)
        return _write(result, out_dir)
    if embedder is None:
        embedder = Embedder()
    ref_emb, emb = embedder(ref_texts), embedder(texts)
    mmd = mmd_test(ref_emb, emb, m.permutations)
    ref_len, cur_len = [len(t.split()) for t in ref_texts], [len(t.split()) for t in texts]
    len_psi = psi(*binned_shares(ref_len, cur_len))
    if labels:
        ref_pred, cur_pred = shares(ref_answers), shares([parse_label(r, labels) for r in responses])
        pred_detail = "predicted labels vs training labels"
    else:
        ref_pred, cur_pred = binned_shares([len(a.split()) for a in ref_answers], [len(r.split()) for r in responses])
        pred_detail = "response length vs training answer length"
    pred_psi = psi(ref_pred, cur_pred)
    checks = [
        Check("embedding MMD p-value", mmd.p_value, m.embedding_p_value, mmd.p_value < m.embedding_p_value,
              f"MMD²={mmd.mmd2:.4f}, {m.permutations} permutations, all-MiniLM-L6-v2 input embeddings"),
        Check("input length PSI", len_psi, m.psi_threshold, len_psi > m.psi_threshold, "words per input"),
        Check("prediction PSI", pred_psi, m.psi_threshold, pred_psi > m.psi_threshold, pred_detail),
    ]
    drifted = [c.name for c in checks if c.drift]
    verdict = f"retrain recommended: drift in {', '.join(drifted)}" if drifted else "no drift detected"
    result = MonitorResult(prod.ref, len(texts), len(ref_texts), checks, bool(drifted), verdict, fb)

    result.plots = drift_plots(ref_emb, emb, ref_len, cur_len, ref_pred, cur_pred, mmd)
    return _write(result, out_dir)


def _write(result: MonitorResult, out_dir: Path) -> MonitorResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.report = write_monitor_report(result, out_dir / "monitor.html")
    (out_dir / "monitor.json").write_text(json.dumps(result.to_json(), indent=2))
    return result
