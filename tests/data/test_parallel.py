"""The worker-process pass gives exactly the serial result: same kept rows, same quarantine lines in the same
order, same card."""

import json
import random
from pathlib import Path

from tunewise.config import parse_config
from tunewise.data import check, parallel, scan
from tunewise.data.parallel import resolve_workers

BROKEN = Path(__file__).parents[1] / "fixtures" / "broken"
FILES = ["truncated.jsonl", "bom_crlf.jsonl", "latin1.csv", "latin1.jsonl", "missing_column.csv",
         "wrong_types.jsonl", "truncated_array.json", "control_chars.jsonl", "empty.jsonl"]


def _mixed(path: Path, n: int = 600) -> Path:
    """Rows with exact and near duplicates, PII, conflicts and broken lines, deterministic."""
    rnd = random.Random(7)
    words = ["card", "top", "up", "transfer", "pending", "refund", "rate", "exchange", "atm", "cash", "fee",
             "limit", "account", "pin", "lost"]
    rows, lines = [], []
    for i in range(n):
        r = rnd.random()
        if r < 0.05 and rows:
            text, label = rnd.choice(rows)
            text = text.upper() if rnd.random() < 0.5 else text + " please"
        else:
            text, label = " ".join(rnd.choice(words) for _ in range(8)) + f" {i}", rnd.choice(["a", "b"])
            if r < 0.08:
                text += f" mail me at user{i}@example.com"
        rows.append((text, label))
        line = json.dumps({"text": text, "label": label})
        lines.append(line[:-3] if r > 0.97 else line)
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(out: Path, files: list[Path], model: Path, workers: int) -> tuple[str, str, dict]:
    cfg = parse_config({"task": {"type": "classification"}, "model": {"base": str(model)},
                        "data": {"paths": [str(f) for f in files], "workers": workers, "pii": "redact"}})
    card = check(cfg, out, out / "clean.jsonl")
    return (out / "quarantine.jsonl").read_text(), (out / "clean.jsonl").read_text(), card.to_json()


def test_parallel_pass_equals_serial(tmp_path, tiny_model_dir, monkeypatch):
    files = [BROKEN / f for f in FILES] + [_mixed(tmp_path / "mixed.jsonl")]
    monkeypatch.setattr(parallel, "CHUNK", 37)  # many chunks in flight, boundaries everywhere
    calls = []
    real = scan.prepare_parallel
    monkeypatch.setattr(scan, "prepare_parallel", lambda *a: calls.append(a[-1]) or real(*a))
    serial = _run(tmp_path / "serial", files, tiny_model_dir, 1)
    assert not calls
    par = _run(tmp_path / "parallel", files, tiny_model_dir, 2)
    assert calls and set(calls) == {2}
    assert par[0] == serial[0] and par[0].count("\n") > 20  # quarantine: same lines, same order
    assert par[1] == serial[1] and par[1].count("\n") > 500
    assert par[2] == serial[2]
    assert serial[2]["counts"]["duplicates_removed"] > 0 and serial[2]["pii"]["occurrences"]


def test_auto_workers_serial_for_small_inputs(tmp_path):
    small = tmp_path / "s.jsonl"
    small.write_text('{"text": "a", "label": "b"}\n')
    assert resolve_workers("auto", [small]) == 1
    assert resolve_workers(3, [small]) == 3
