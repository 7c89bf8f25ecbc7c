"""Export stage: a registered model as merged safetensors (LoRA folded into the base) and optionally as GGUF.
Entry point: `export_model(registry, ref, out_dir, gguf=False) -> ExportResult`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tunewise.registry import Registry


@dataclass
class ExportResult:
    model: str
    merged_dir: Path
    gguf_file: Path | None


def merge_adapter(base_dir: Path, adapter_dir: Path, out: Path):
    """Fold the LoRA weights into the base and save safetensors + tokenizer; returns the merged model."""
    import torch

    from tunewise.models import load_adapter, load_model, load_tokenizer

    model = load_adapter(load_model(Path(base_dir), "cpu", torch.float32), adapter_dir)
    merged = model.merge_and_unload()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    load_tokenizer(Path(base_dir)).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return merged


def export_model(registry: Registry, ref: str, out_dir: Path, gguf: bool = False, f16: bool = False) -> ExportResult:
    m = registry.model(ref)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged_dir = out_dir / f"{m.name}-v{m.version}-merged"
    merged = merge_adapter(Path(m.base_model["path"]), m.artifact_path, merged_dir)
    gguf_file = None
    if gguf:
        from tunewise.export.gguf_writer import write_gguf

        gguf_file = write_gguf(merged, merged_dir, out_dir / f"{m.name}-v{m.version}{'-f16' if f16 else ''}.gguf",
                               f16=f16)
    return ExportResult(m.ref, merged_dir, gguf_file)
