"""Kill a CPU training run with SIGKILL mid-epoch, resume it, and end with the uninterrupted run's weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.train.conftest import RESUME_TRAIN, tiny_config, tiny_data
from tunewise.errors import ConfigError
from tunewise.train import train

ROOT = Path(__file__).resolve().parents[2]


def _job(model_dir, tmp, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tests.fixtures.train_job", str(model_dir), str(tmp), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, tiny_base):
    clean = train(tiny_config(tmp_path / "clean", **RESUME_TRAIN), tiny_data(), tiny_base)

    killed = tmp_path / "killed"
    run_dir = tiny_config(killed, **RESUME_TRAIN).run_dir
    proc = _job(tiny_base.path, killed, "--pause-at", "5")  # step 5 of 6 in epoch 1; last checkpoint: 4
    deadline = time.time() + 240
    while not (run_dir / "paused").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "training job never reached step 5"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "adapter").exists()

    with pytest.raises(ConfigError, match="interrupted run"):  # no silent restart over the checkpoints
        train(tiny_config(killed, **RESUME_TRAIN), tiny_data(), tiny_base)
    resumed = train(tiny_config(killed, **RESUME_TRAIN), tiny_data(), tiny_base, resume=True)
    assert resumed.resumed_from.endswith("checkpoint-4")

    a = load_file(clean.weights_dir / "adapter_model.safetensors")
    b = load_file(resumed.weights_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for k in a:
        assert (a[k] - b[k]).abs().max().item() <= 1e-5, k
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)  # training did move the adapter


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_base):
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        train(tiny_config(tmp_path), tiny_data(), tiny_base, resume=True)
