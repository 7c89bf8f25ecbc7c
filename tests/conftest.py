import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + word-level ChatML tokenizer saved as a local HF folder."""
    from tunewise.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from tunewise.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_model_dir):
    """Whole pipeline runs with the tiny model, one per task type: {task: (config, metrics)}.
    Classification scores labels by log-likelihood; generation generates (both paths get covered)."""
    from tunewise.pipeline import run
    from tunewise.testing import tiny_config

    out = {}
    for task, mode in (("classification", "score"), ("generation", "generate")):
        cfg = tiny_config(tmp_path_factory.mktemp(task), tiny_model_dir, task, classification_mode=mode)
        out[task] = (cfg, run(cfg))
    return out
