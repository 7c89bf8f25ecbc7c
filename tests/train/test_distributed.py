"""Several processes: the global batch, FSDP's conditions, and `tunewise train` under torchrun with two CPU
processes (gloo) against one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.train.conftest import tiny_config
from tunewise.errors import ConfigError
from tunewise.testing import write_topic_documents
from tunewise.train import distributed
from tunewise.train.trainer import training_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")


def test_global_batch_size_sets_grad_accum_from_the_device_count(tmp_path):
    cfg = tiny_config(tmp_path, batch_size=4, global_batch_size=16)
    assert [distributed.grad_accum(cfg, w) for w in (1, 2, 4)] == [4, 2, 1]
    assert {distributed.global_batch(cfg, w) for w in (1, 2, 4)} == {16}
    plain = tiny_config(tmp_path, batch_size=4, grad_accum=3)
    assert distributed.global_batch(plain, 2) == 24  # batch_size is per device, the Hugging Face way
    with pytest.raises(ConfigError, match="global_batch_size=16 is not a multiple of .* 4 × 8"):
        distributed.grad_accum(cfg, 8)


def test_describe_batch_and_ranks_under_a_launcher(tmp_path, two_processes):
    cfg = tiny_config(tmp_path, batch_size=4, global_batch_size=16)
    assert distributed.describe_batch(cfg) == "global batch 16 = 4 per device × 2 devices × grad_accum 2"
    assert distributed.is_distributed() and not distributed.is_main_process()


def test_training_args_get_the_grad_accum_of_the_device_count(tmp_path, monkeypatch):
    # Only our rank helpers see 2 devices: TrainingArguments itself would start a process group.
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    cfg = tiny_config(tmp_path, batch_size=4, global_batch_size=16)
    assert training_args(cfg, tmp_path, "cpu", False, False).gradient_accumulation_steps == 2


def test_fsdp_is_off_on_one_process_and_an_error_on_cpu_processes(tmp_path, two_processes, monkeypatch):
    cfg = tiny_config(tmp_path, fsdp=True)
    with pytest.raises(ConfigError, match="needs CUDA GPUs"):
        distributed.uses_fsdp(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="qlora does not run under FSDP"):
        distributed.uses_fsdp(tiny_config(tmp_path, fsdp=True, method="qlora"))
    assert distributed.uses_fsdp(cfg)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.uses_fsdp(cfg)  # nothing to shard: the same config trains on one device


def test_fsdp_reaches_transformers_as_fsdp2_wrapping_the_decoder_layer(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    cfg = tiny_config(tmp_path, fsdp=True, gradient_checkpointing=True)
    args = training_args(cfg, tmp_path, "cpu", False, False, fsdp_layers=["LlamaDecoderLayer"])
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin["reshard_after_forward"] is True and plugin["state_dict_type"] == "FULL_STATE_DICT"
    # FSDP's own activation checkpointing instead of the Trainer's (which all-gathers twice under FSDP).
    assert plugin["activation_checkpointing"] is True and not args.activation_checkpointing


needs_torchrun = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def _config(tmp_path: Path, model_dir: Path) -> Path:
    # 136 distinct rows - 8 val - 8 test = 120 = 15 optimizer steps of 8: no ragged last batch, so both runs see
    # the same examples in every optimizer step. Dropout off: it draws different masks on different ranks.
    data = write_topic_documents(tmp_path / "docs.jsonl", 136)
    raw = {"name": "single", "output_dir": str(tmp_path / "runs"),
           "task": {"type": "classification", "instruction": "classify the text"},
           "data": {"paths": [str(data)], "split": {"val": 8, "test": 8}},
           "model": {"base": str(model_dir), "max_length": 64},
           "train": {"batch_size": 4, "global_batch_size": 8, "learning_rate": 1e-3, "logging_steps": 1,
                     "report_to": ["tensorboard"], "lora": {"dropout": 0.0}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train(config: Path, name: str, procs: int, *sets: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] \
        if procs > 1 else [sys.executable]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "tunewise.cli", "train", str(config), "--set", f"name={name}",
                           *(a for s in sets for a in ("--set", s))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@needs_torchrun
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir)
    single, ddp = _train(config, "single", 1), _train(config, "ddp", 2)
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    # Rank 0 alone reports: the global batch once, the result once.
    assert ddp.stdout.count("global batch 8 = 4 per device × 2 devices × grad_accum 1") == 1, ddp.stdout
    assert single.stdout.count("global batch 8 = 4 per device × 1 device × grad_accum 2") == 1, single.stdout
    assert ddp.stdout.count("lora: ") == 1

    runs = tmp_path / "runs"
    one, two = (json.loads((runs / n / "train_result.json").read_text()) for n in ("single", "ddp"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["global_batch"] == two["global_batch"] == 8
    assert len(one["train_loss"]) == len(two["train_loss"]) == 15  # the same number of optimizer steps
    loss_one, loss_two = one["val_loss"][-1][1], two["val_loss"][-1][1]
    assert abs(loss_two - loss_one) / loss_one < 0.02

    # One set of outputs, written by rank 0: a whole manifest, one adapter, the finished mark.
    manifest = json.loads((runs / "ddp" / "manifest.json").read_text())
    assert manifest["train"]["world_size"] == 2 and manifest["train"]["global_batch"] == 8
    assert sorted(p.name for p in (runs / "ddp" / "adapter").glob("*.safetensors")) == ["adapter_model.safetensors"]
    assert (runs / "ddp" / "checkpoints" / ".finished").is_file()
    assert len(list((runs / "ddp" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (runs / "ddp" / "data" / "train.jsonl").read_text() == (runs / "single" / "data" / "train.jsonl").read_text()

    # Same examples in every step, averaged gradients: the weights agree up to float summation order.
    a, b = (load_file(runs / n / "adapter" / "adapter_model.safetensors") for n in ("single", "ddp"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


@needs_torchrun
def test_offloaded_layers_under_torchrun_match_one_process(tmp_path, tiny_model_dir):
    # the fast path on the CPU with one of the tiny model's two layers offloaded (offload.py's hooks beside DDP's)
    config = _config(tmp_path, tiny_model_dir)
    fast = ("train.fast.enabled=true", "train.gradient_checkpointing=true", "train.fast.checkpoint_layers=0.0",
            "train.fast.offload_kept_layers=1")
    single, ddp = _train(config, "single", 1, *fast), _train(config, "ddp", 2, *fast)
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "saved tensors of 1 layers in host memory" in ddp.stderr, ddp.stderr[-3000:]
    runs = tmp_path / "runs"
    a, b = (load_file(runs / n / "adapter" / "adapter_model.safetensors") for n in ("single", "ddp"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
