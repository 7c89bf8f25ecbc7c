"""Checkpoints: find the last complete one, refuse to silently overwrite an interrupted run, load results."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tunewise.errors import ConfigError, ModelError
from tunewise.models import load_weights

FINISHED = ".finished"  # written into checkpoints/ when a run ends normally


def last_complete_checkpoint(folder: Path) -> Path | None:
    """Highest-step checkpoint with trainer_state.json, which Trainer writes last: a run killed while saving
    leaves a checkpoint without it, and resuming from that one would fail."""
    steps = []
    for p in Path(folder).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and (p / "trainer_state.json").is_file():
            steps.append((int(m.group(1)), p))
    return max(steps)[1] if steps else None


def prepare_checkpoints(folder: Path, resume: bool, clear: bool = True) -> Path | None:
    """The checkpoint to resume from (resume=True), or None after clearing a finished run's checkpoints
    (clear=False: only check, as every rank but the first does)."""
    folder = Path(folder)
    last = last_complete_checkpoint(folder) if folder.is_dir() else None
    if resume:
        if last is None:
            raise ConfigError(f"{folder}: no complete checkpoint to resume from (train without --resume)")
        return last
    if last is not None and not (folder / FINISHED).is_file():
        raise ConfigError(f"{folder}: holds checkpoints of an interrupted run (up to {last.name}); "
                          "continue it with --resume, or delete the folder to start over")
    if clear:
        shutil.rmtree(folder, ignore_errors=True)
    return None


def mark_finished(folder: Path) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / FINISHED).write_text("")


def trained_weights_dir(run_dir: Path) -> Path:
    """`<run>/adapter` for LoRA/DoRA/QLoRA, `<run>/model` for full fine-tuning."""
    run_dir = Path(run_dir)
    for name, marker in (("adapter", "adapter_config.json"), ("model", "config.json")):
        if (run_dir / name / marker).is_file():
            return run_dir / name
    raise ModelError(f"{run_dir}: no trained adapter/ or model/ here (train first: tunewise train CONFIG)")


def load_trained(run_dir: Path, base_path: Path, device: str | None = None):
    """The fine-tuned model of a run: base + adapter, or the fully fine-tuned weights (safetensors only)."""
    return load_weights(trained_weights_dir(run_dir), base_path, device)
