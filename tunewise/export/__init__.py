"""Export stage: a registered model as one safetensors model folder (an adapter folded into its base; a full
fine-tune or soup as it is) and optionally as GGUF.
Entry point: `export_model(registry, ref, out_dir, gguf=False) -> ExportResult`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tunewise.export.gguf_writer import write_gguf
from tunewise.models import check_full_model, load_adapter, load_model, load_tokenizer
from tunewise.registry import Registry


@dataclass
class ExportResult:
    model: str
    merged_dir: Path
    gguf_file: Path | None


def merge_adapter(base_dir: Path, adapter_dir: Path, out: Path):
    """Fold the LoRA weights into the base and save safetensors + tokenizer; returns the merged model."""
    import torch  # heavy

    model = load_adapter(load_model(Path(base_dir), "cpu", torch.float32), adapter_dir)
    merged = model.merge_and_unload()
    _save(merged, load_tokenizer(Path(base_dir)), out)
    return merged


def copy_full_model(model_dir: Path, base_dir: Path, out: Path):
    """A full fine-tune or soup re-saved as safetensors + tokenizer (its own, else its base's); returns it.
    Re-saved, not copied: only the weights, config and tokenizer leave (no training_args.bin pickle)."""
    import torch  # heavy

    model = load_model(check_full_model(model_dir), "cpu", torch.float32)
    own = (Path(model_dir) / "tokenizer_config.json").is_file()
    _save(model, load_tokenizer(Path(model_dir) if own else Path(base_dir)), out)
    return model


def _save(model, tokenizer, out: Path) -> None:
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def export_model(registry: Registry, ref: str, out_dir: Path, gguf: bool = False, f16: bool = False) -> ExportResult:
    m = registry.model(ref)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged_dir = out_dir / f"{m.name}-v{m.version}-merged"
    if m.kind == "full":
        merged = copy_full_model(m.artifact_path, Path(m.base_model["path"]), merged_dir)
    else:
        merged = merge_adapter(Path(m.base_model["path"]), m.artifact_path, merged_dir)
    gguf_file = None
    if gguf:
        gguf_file = write_gguf(merged, merged_dir, out_dir / f"{m.name}-v{m.version}{'-f16' if f16 else ''}.gguf",
                               f16=f16)
    return ExportResult(m.ref, merged_dir, gguf_file)
