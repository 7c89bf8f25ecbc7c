"""The two rows that need more than a random model on the GPU: QLoRA (a random 8B saved once, then
loaded in 4-bit the way tunewise loads it) and the embedded 135M model on Banking77 (padded plain vs
packed tunewise)."""

from __future__ import annotations

import csv
import random
import tempfile
from pathlib import Path

import torch

from bench.train_speed.lib import build_model, flops_per_token, prepare, train_loop
from bench.train_speed.rows import LLAMA3_8B, SIDES, TINY
from tunewise.testing import save_tiny_model

SAVED = {False: Path("/tmp/tunewise-bench-llama3-8b-random"), True: Path("/tmp/tunewise-bench-tiny-random")}


def quantized_8b(tiny: bool, seed: int):
    """Random Llama-3-8B-shaped weights saved as safetensors (once per machine), loaded in 4-bit NF4 through
    tunewise.train.methods.load_quantized, i.e. transformers' BitsAndBytesConfig: the real QLoRA path."""
    if not torch.cuda.is_available():
        return {"error": "skipped: QLoRA needs CUDA (bitsandbytes)"}
    folder = SAVED[tiny]
    if not (folder / "config.json").exists():
        model = build_model(TINY if tiny else LLAMA3_8B, seed)
        model.save_pretrained(folder, safe_serialization=True)
        del model
        torch.cuda.empty_cache()
    from tunewise.train.methods import load_quantized

    return load_quantized(folder, 0, "sdpa")


def _banking77_rows(path: str | None, tiny: bool) -> list[tuple[str, str]]:
    if path:
        with open(path, encoding="utf-8", newline="") as fh:
            return [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    if not tiny:
        raise SystemExit("the banking77 row needs --banking77 PATH/train.csv")
    rng = random.Random(0)
    words = "card arrival payment refund transfer money account hello world the bank".split()
    return [
        (" ".join(rng.choices(words, k=rng.randint(3, 20))), rng.choice(["card", "refund", "transfer"]))
        for _ in range(400)
    ]


def _model_and_tokenizer(spec: dict):
    if spec["tiny"]:
        folder = save_tiny_model(Path(tempfile.mkdtemp()))
    else:
        from tunewise.models import resolve_model

        folder = resolve_model(spec["model"]).path
    from tunewise.models import load_model, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(folder, device).float(), load_tokenizer(folder)  # full FT: fp32 master weights


def _encode(spec: dict, tokenizer) -> list[dict]:
    from tunewise.config import parse_config
    from tunewise.data.records import classification_record
    from tunewise.train.plan import encode_split

    rows = _banking77_rows(spec.get("banking77"), spec["tiny"])
    labels = sorted({label for _, label in rows})
    cfg = parse_config(
        {
            "data": {"builtin": "bbc_news"},
            "model": {"max_length": 128},
            "task": {"instruction": "Which banking intent does this customer message express?"},
        }
    )
    encoded, _ = encode_split([classification_record(t, lab) for t, lab in rows], cfg, labels, tokenizer)
    return [e.to_features() for e in encoded]


def measure_banking77(spec: dict, row, side: str) -> dict:
    """Full fine-tuning, batch 32: plain = padded batches (random order), tunewise = the same
    examples per step, packed padding-free. tok/s counts real tokens only, on both sides."""
    from tunewise.train.tokenize import PadCollator, packed_collator

    model, tok = _model_and_tokenizer(spec)
    feats = _encode(spec, tok)
    random.Random(1).shuffle(feats)
    steps = spec["warmup"] + 3 * spec["steps"]
    groups = [feats[(i * row.batch) % len(feats) :][: row.batch] for i in range(steps)]
    groups = [g for g in groups if len(g) == row.batch]
    packed = side != "base" and SIDES[side].get("packing", False)
    collate = packed_collator() if packed else PadCollator(tok.pad_token_id)
    model, described, _, freeze = prepare(model, side, "full", False, seed=0)
    tokens = [sum(len(f["input_ids"]) for f in g) for g in groups]
    res = train_loop(model, [collate(g) for g in groups], spec["warmup"], tokens, freeze_gc=freeze)
    shape = {
        k: getattr(model.config, k)
        for k in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "vocab_size",
            "num_key_value_heads",
            "num_attention_heads",
        )
    }
    mean_len = sum(tokens) / (len(tokens) * row.batch)
    res["mfu"] = (
        res["tokens_per_s"] * flops_per_token(shape, int(mean_len), True) / (spec["peak_tflops"] * 1e12)
    )
    return {
        **res,
        "path": described + (" + packing" if packed else " + padding"),
        "mean_example_tokens": mean_len,
    }
