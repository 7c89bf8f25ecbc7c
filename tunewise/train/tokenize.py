"""Batches of encoded examples (tunewise.data.encode) for the Trainer: right-padded, or packed into one row."""

from __future__ import annotations

from tunewise.data.encode import IGNORE


class PadCollator:
    """Right-pads a batch; padded positions get label IGNORE and attention 0. buckets: ascending widths, the batch
    padded to the first that holds its longest row (bucket_lengths). Otherwise the width is the longest row
    rounded up to a multiple of `multiple`, never past `cap` (the longest example: what the memory plan assumed)."""

    def __init__(self, pad_id: int, buckets: list[int] | None = None, multiple: int = 1, cap: int | None = None):
        self.pad_id, self.buckets, self.multiple, self.cap = pad_id, buckets or [], multiple, cap

    def __call__(self, features: list[dict]) -> dict:
        import torch  # heavy

        width = padded_width(max(len(f["input_ids"]) for f in features), self.buckets, self.multiple, self.cap)
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(f["input_ids"] + [self.pad_id] * (width - n))
            labels.append(f["labels"] + [IGNORE] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}


def padded_width(longest: int, buckets=(), multiple: int = 1, cap: int | None = None) -> int:
    """The width a batch whose longest row is `longest` is padded to: the first bucket that holds it, else `longest`
    rounded up to a multiple of `multiple` but not past `cap` (never below `longest`)."""
    rounded = -(-longest // multiple) * multiple
    return next((b for b in buckets if b >= longest), max(longest, min(rounded, cap)) if cap is not None else rounded)


def bucket_lengths(longest: int, smallest: int = 64) -> list[int]:
    """Padded widths up to `longest` (the last one) so that batch shapes repeat, for a decoder stack replayed from
    CUDA graphs per shape (tunewise.train.fast.graphs): 64, 96, 128, 192, 256, ... (alternately 1.5x and 4/3x the
    last: at most half a row of padding; ten widths under 2,048)."""
    out, base = [], smallest
    while base < longest:
        out += [w for w in (base, base * 3 // 2) if w < longest]
        base *= 2
    return [*out, longest]


def packed_collator():
    """Padding-free packing: a batch becomes one row with position_ids restarting at 0 for every example.

    transformers turns restarting position_ids into per-example attention (varlen kernels for
    flash_attention_2, a block-diagonal mask for sdpa/eager), so packed examples never attend to each other;
    tests/train/test_tokenize.py checks that per-example losses match the unpacked ones."""
    from transformers import DataCollatorWithFlattening  # heavy

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
