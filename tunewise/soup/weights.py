"""Model-soup weights: find an ingredient's weights, check that ingredients line up tensor for tensor, and
average them into a model folder. Safetensors only: tensors are read with `safe_open`, never unpickled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from tunewise.errors import ConfigError

# Weights (written fresh) and pickles (training_args.bin: stale, and never something to hand on) stay behind;
# everything else of the first ingredient (config.json, generation_config.json, tokenizer files) is copied.
NOT_COPIED = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth", "*.pkl", "soup.json")


def is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def resolve_ingredient(path: Path) -> Path:
    """The weights folder of an ingredient: a full model folder, a PEFT adapter folder, or a run folder
    (`runs/<name>`, whose `model/` or `adapter/` is taken)."""
    for folder in (path, path / "model", path / "adapter"):
        if is_adapter(folder) or is_model(folder):
            return folder
    raise ConfigError(f"{path}: not a model folder (config.json + *.safetensors), a PEFT adapter "
                      "(adapter_config.json) or a run folder with model/ or adapter/ in it")


def tensor_index(folder: Path) -> dict[str, tuple[Path, list[int]]]:
    """Tensor name → (safetensors file, shape), read from the file headers only (no tensor is loaded)."""
    index: dict[str, tuple[Path, list[int]]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                if name in index:
                    raise ConfigError(f"{folder}: tensor {name} is stored twice ({index[name][0].name}, {file.name})")
                index[name] = (file, list(fh.get_slice(name).get_shape()))
    return index


def _architecture(folder: Path) -> tuple:
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return cfg.get("model_type"), cfg.get("architectures")


def check_compatible(folders: list[Path]) -> dict[str, tuple[Path, list[int]]]:
    """Every folder has the first one's architecture, tensor names and shapes; else a ConfigError naming the
    folder and the tensor. Returns the first folder's index."""
    first, ref = folders[0], tensor_index(folders[0])
    for folder in folders[1:]:
        if _architecture(folder) != _architecture(first):
            raise ConfigError(f"soup: {folder} is {_architecture(folder)}, but {first} is {_architecture(first)}")
        index = tensor_index(folder)
        missing, extra = sorted(ref.keys() - index.keys()), sorted(index.keys() - ref.keys())
        if missing:
            raise ConfigError(f"soup: {folder} has no tensor {missing[0]} (which {first} has)")
        if extra:
            raise ConfigError(f"soup: {folder} has a tensor {extra[0]} that {first} lacks")
        for name, (_, shape) in index.items():
            if shape != ref[name][1]:
                raise ConfigError(f"soup: {folder}: tensor {name} has shape {shape}, but {ref[name][1]} in {first}")
    return ref


def _by_file(index: dict[str, tuple[Path, list[int]]]) -> dict[Path, list[str]]:
    out: dict[Path, list[str]] = {}
    for name, (file, _) in index.items():
        out.setdefault(file, []).append(name)
    return out


def mean_state_dict(folders: list[Path]) -> dict[str, torch.Tensor]:
    """The elementwise mean of every tensor, summed in float32 and returned in the first folder's dtypes.
    Streams: one running float32 sum, one ingredient tensor read at a time (not N models in memory)."""
    check_compatible(folders)
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for folder in folders:
        for file, names in _by_file(tensor_index(folder)).items():
            with safe_open(str(file), framework="pt") as fh:
                for name in names:
                    t = fh.get_tensor(name)
                    if name not in total:
                        dtypes[name] = t.dtype
                        total[name] = t.to(torch.float32, copy=True) if t.is_floating_point() else t
                    elif not t.is_floating_point():  # integer buffers cannot be averaged: they must agree
                        if not torch.equal(t, total[name]):
                            raise ConfigError(f"soup: {folder}: integer tensor {name} differs from the first "
                                              "ingredient's")
                    else:
                        total[name] += t.float()
    for name, t in total.items():
        if t.is_floating_point():
            total[name] = t.div_(len(folders)).to(dtypes[name])
    return total


def write_soup(folders: list[Path], out: Path) -> None:
    """Average `folders` into `out`: safetensors weights plus the first folder's config and tokenizer files,
    so `load_model(out)` and `tunewise eval --adapter out` take it like any fine-tuned model folder."""
    from huggingface_hub import save_torch_state_dict  # heavy

    out.mkdir(parents=True, exist_ok=True)
    skip = shutil.ignore_patterns(*NOT_COPIED)
    ignored = skip(str(folders[0]), [p.name for p in folders[0].iterdir()])
    for item in folders[0].iterdir():
        if item.name in ignored:
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name, ignore=skip, dirs_exist_ok=True)
        else:
            shutil.copy2(item, out / item.name)
    # Sharded like transformers' save_pretrained (index file beyond 5 GB); tied tensors were already dropped
    # from the ingredients' files, so the mean has none to deduplicate.
    save_torch_state_dict(mean_state_dict(folders), out, metadata={"format": "pt"})
