import random

import pytest

from tunewise.config import parse_config
from tunewise.data import PreparedData
from tunewise.models import ResolvedModel
from tunewise.testing import topic_records

TOPICS = {"sport": "the team won the match", "business": "the bank profit and market shares",
          "politics": "the minister and the election vote", "tech": "a phone with new software"}


def tiny_data(n_train: int = 24, n_val: int = 8, seed: int = 0) -> PreparedData:
    rng = random.Random(seed)

    def rows(n):
        return topic_records(n, rng, TOPICS, list(TOPICS))

    return PreparedData(rows(n_train), rows(n_val), rows(4), sorted(TOPICS), "hash")


def tiny_config(tmp_path, **train) -> object:
    raw = {"name": "t", "output_dir": str(tmp_path / "runs"), "data": {"builtin": "bbc_news"},
           "task": {"instruction": "classify the text ."},
           "model": {"max_length": 64},
           "train": {"batch_size": 4, "epochs": 1, "logging_steps": 1, "learning_rate": 1e-3,
                     "report_to": [], **train}}
    return parse_config(raw)


@pytest.fixture
def tiny_base(tiny_model_dir):
    return ResolvedModel("tiny", tiny_model_dir, "sha")


# 24 examples / batch 4 = 6 steps an epoch, 2 epochs; a checkpoint every 2 steps; LoRA dropout on, so the
# RNG state has to be restored too for the resumed run to match.
RESUME_TRAIN = {"epochs": 2, "save_steps": 2, "save_total_limit": 3, "lora": {"dropout": 0.1}}
