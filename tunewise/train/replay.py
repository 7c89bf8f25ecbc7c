"""Forgetting mitigation by replay: mix a share of general instruction data into the training set.

The shipped set (replay_data/general_instructions.jsonl, 52 rows) was written by the tunewise authors for this
purpose; point train.replay.path at your own JSONL ({prompt, completion} or {messages}) for a larger one."""

from __future__ import annotations

import importlib.resources
import random
from pathlib import Path

from tunewise.config import ReplayConfig
from tunewise.data.formats import read_records
from tunewise.data.records import Record
from tunewise.errors import DataError


def shipped_replay_path() -> Path:
    return Path(str(importlib.resources.files("tunewise") / "train" / "replay_data" / "general_instructions.jsonl"))


def replay_records(cfg: ReplayConfig, n_task: int, seed: int) -> list[Record]:
    """`fraction` of the final training set, i.e. n_task * f / (1 - f) rows, drawn with replacement if needed."""
    if cfg.fraction <= 0:
        return []
    path = Path(cfg.path) if cfg.path else shipped_replay_path()
    pool, rejected = read_records(path)
    if rejected:
        r = rejected[0]
        raise DataError(f"{r.file}:{r.line}: {r.field}: {r.reason} (train.replay.path)")
    if not pool:
        raise DataError(f"{path}: no replay rows (train.replay.path)")
    want = round(n_task * cfg.fraction / (1 - cfg.fraction))
    rng = random.Random(seed)
    if want <= len(pool):
        return rng.sample(pool, want)
    return [rng.choice(pool) for _ in range(want)]
