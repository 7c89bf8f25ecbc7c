"""The sides from outside tunewise that `python -m bench.train_speed` can run beside plain HF + PEFT (`base`)
and tunewise's fast path, on the same random weights, token batches, LoRA (r=16, alpha 32, all 7 linear
layers), optimizer loop and timing code (lib.train_loop):

- `hf-liger`: the `base` side exactly (transformers + PEFT, same checkpointing) with Liger Kernel applied to the
  model instance first: the family's apply_liger_kernel_to_<model_type>(model=...) with its defaults (RoPE,
  RMSNorm, SwiGLU / GeGLU) and fused linear cross-entropy, so the loss never materialises the logits.
- `unsloth`: Unsloth's FastLanguageModel on the same random weights saved as safetensors (once per machine):
  from_pretrained(folder, dtype=bf16, load_in_4bit for a QLoRA row), then get_peft_model with the same LoRA,
  lora_dropout 0 and use_gradient_checkpointing="unsloth" (its docs' recommendation) where the row
  checkpoints. Its forward computes the loss with its own fused cross-entropy.

Each runs in a process of its own started as `python -m bench.train_speed.sides_external --worker SPEC`, so
that Unsloth is imported before transformers, peft and trl, as it requires (bench.train_speed's own worker
imports tunewise, which imports transformers). A side that cannot run answers one line, e.g. "unsloth: import
failed: ...", which the table and the JSONL record instead of a result; on a machine without CUDA both answer
"skipped: <side> needs CUDA" (TRAIN_SPEED_UNSLOTH_CPU=1 lets the unsloth side try Unsloth's CPU backend)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

EXTERNAL_SIDES = {
    "hf-liger": "plain transformers + PEFT + Liger Kernel (RoPE, RMSNorm, SwiGLU, fused linear cross-entropy)",
    "unsloth": "Unsloth FastLanguageModel (gradient checkpointing 'unsloth' where the row checkpoints)",
}
PACKAGE = {"hf-liger": "liger_kernel", "unsloth": "unsloth"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA = 16, 32  # as the base side (lib.prepare) and tunewise's config in lib._train_cfg
# Unsloth writes compiled modules and temporary buffers under the working directory unless told otherwise.
UNSLOTH_ENV = {
    "UNSLOTH_COMPILE_LOCATION": "/tmp/unsloth_compiled_cache",
    "UNSLOTH_DISABLE_STATISTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}


def _cuda() -> bool:
    import torch  # heavy

    return torch.cuda.is_available()


def unavailable(side: str, kind: str) -> str | None:
    """Why `side` cannot run a row of this kind here, or None."""
    if kind not in ("lora", "qlora"):
        return f"skipped: {side} runs LoRA and QLoRA rows only"
    cpu_ok = side == "unsloth" and os.environ.get("TRAIN_SPEED_UNSLOTH_CPU") == "1"
    if not _cuda() and not cpu_ok:
        return f"skipped: {side} needs CUDA"
    if importlib.util.find_spec(PACKAGE[side]) is None:
        return f"{side}: {PACKAGE[side]} is not installed"
    if kind == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return f"{side}: bitsandbytes is not installed (QLoRA)"
    return None


def saved_folder(shape: dict, tiny: bool) -> Path:
    """The random weights of `shape` (lib.build_model, seed 0: the other sides' weights) as safetensors with a
    tokenizer, written once per machine. The Llama-3-8B and tiny shapes share models.SAVED with the QLoRA
    rows; another family's goes to /tmp/tunewise-bench-saved-<hash of its shape> (delete it when done: an
    8B model is ~16 GB)."""
    import torch  # heavy

    from bench.train_speed.lib import build_model
    from bench.train_speed.models import SAVED
    from bench.train_speed.rows import LLAMA3_8B, TINY

    if shape == LLAMA3_8B or shape == TINY:
        folder = SAVED[shape == TINY]
    else:
        digest = hashlib.sha1(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:10]
        folder = Path(f"/tmp/tunewise-bench-saved-{digest}")
    if not (folder / "config.json").exists():
        partial = folder.with_name(folder.name + ".partial")  # a save cut short never looks complete
        shutil.rmtree(partial, ignore_errors=True)
        model = build_model(shape, seed=0)
        model.save_pretrained(partial, safe_serialization=True)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        partial.rename(folder)
    if not (folder / "tokenizer_config.json").exists():  # Unsloth loads one; the batches are token ids anyway
        from tunewise.testing import build_tokenizer

        build_tokenizer().save_pretrained(folder)
    return folder


def apply_liger(model) -> str:
    """Liger's patch for the model's family, on this instance, with fused linear cross-entropy."""
    import inspect

    import liger_kernel.transformers as lk  # optional

    model_type = model.config.model_type
    patch = getattr(lk, f"apply_liger_kernel_to_{model_type}", None)
    if patch is None:
        raise RuntimeError(f"liger-kernel has no apply_liger_kernel_to_{model_type}")
    wanted = {"fused_linear_cross_entropy": True, "cross_entropy": False, "model": model}
    params = inspect.signature(patch).parameters
    patch(**{k: v for k, v in wanted.items() if k in params})
    return f"apply_liger_kernel_to_{model_type}"


def load_unsloth(folder: Path, kind: str, gc: bool, seq: int, seed: int, dropout: float):
    """FastLanguageModel.from_pretrained + get_peft_model as Unsloth's docs show them; the adapters' seed is
    the other sides' (random_state = seed + 1, as lib.prepare's torch.manual_seed(seed + 1))."""
    from unsloth import FastLanguageModel  # imported before transformers by this module's __main__

    from bench.train_speed.lib import device_and_dtype

    _, dtype = device_and_dtype()
    checkpointing = "unsloth" if gc else False
    model, _ = FastLanguageModel.from_pretrained(
        model_name=str(folder),
        max_seq_length=seq,
        dtype=dtype,
        load_in_4bit=kind == "qlora",
        load_in_8bit=False,
        full_finetuning=False,
        use_gradient_checkpointing=checkpointing,
        fix_tokenizer=False,  # a word-level stand-in tokenizer: nothing to fix, nothing to resize
        local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=LORA_R,
        target_modules=LORA_TARGETS,
        lora_alpha=LORA_ALPHA,
        lora_dropout=dropout,
        bias="none",
        use_gradient_checkpointing=checkpointing,
        random_state=seed + 1,
        max_seq_length=seq,
        temporary_location="/tmp/_unsloth_temporary_saved_buffers",
    )
    return model


def measure_external(spec: dict, row, shape: dict, seq: int) -> dict:
    """measure.measure for an external side: same batches, loop and MFU; only the model's preparation differs."""
    side = spec["side"]
    why = unavailable(side, row.kind)
    if why:
        return {"error": why}
    from bench.train_speed.lib import build_model, flops_per_token, prepare, random_batches, train_loop
    from bench.train_speed.measure import _oom_safe
    from bench.train_speed.models import quantized_8b

    dropout = spec.get("lora_dropout", 0.0)
    if side == "unsloth":
        folder = saved_folder(shape, spec["tiny"])
        model = load_unsloth(folder, row.kind, row.gc, seq, seed=0, dropout=dropout)
        described, where = EXTERNAL_SIDES[side], str(folder)
    else:
        model = quantized_8b(spec["tiny"], seed=0) if row.kind == "qlora" else build_model(shape, seed=0)
        if isinstance(model, dict):
            return model
        patched = apply_liger(model)
        model, _, _, _ = prepare(model, "base", row.kind, row.gc, seed=0, dropout=dropout, batch=row.batch)
        described, where = f"{EXTERNAL_SIDES[side]}: {patched}", None
    batches = random_batches(shape["vocab_size"], seq, row.batch, spec["warmup"] + spec["steps"], seed=1)
    res = _oom_safe(train_loop, model, batches, spec["warmup"], [seq * row.batch] * len(batches))
    if "tokens_per_s" in res:
        res["mfu"] = res["tokens_per_s"] * flops_per_token(shape, seq, False) / (spec["peak_tflops"] * 1e12)
    return {**res, "path": described, "seq": seq, "batch": row.batch, **({"weights": where} if where else {})}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:300]


def _run_worker(spec: dict) -> dict:
    from bench.train_speed.rows import ROWS  # no transformers there

    side = spec["side"]
    why = unavailable(side, ROWS[spec["row"]].kind)
    if why:
        return {"error": why}
    if side == "unsloth":
        for key, value in UNSLOTH_ENV.items():
            os.environ.setdefault(key, value)
        try:  # before anything imports transformers
            import unsloth  # noqa: F401
        except BaseException as err:  # SystemExit / NotImplementedError from its checks too
            return {"error": f"unsloth: import failed: {_one_line(err)}"}
    from bench.train_speed.measure import measure

    try:
        return measure(spec)
    except Exception as err:
        return {"error": f"{side}: {_one_line(err)}"}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m bench.train_speed.sides_external --worker SPEC (started by bench.train_speed)")
    print(json.dumps(_run_worker(json.loads(sys.argv[2]))), flush=True)
