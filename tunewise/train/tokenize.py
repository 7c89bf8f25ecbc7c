"""Batches of encoded examples (tunewise.data.encode) for the Trainer: right-padded, or packed into one row."""

from __future__ import annotations

from tunewise.data.encode import IGNORE


class PadCollator:
    """Right-pads a batch; padded positions get label IGNORE and attention 0."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch  # heavy

        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            n = len(f["input_ids"])
            ids.append(f["input_ids"] + [self.pad_id] * (width - n))
            labels.append(f["labels"] + [IGNORE] * (width - n))
            mask.append([1] * n + [0] * (width - n))
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}


def packed_collator():
    """Padding-free packing: a batch becomes one row with position_ids restarting at 0 for every example.

    transformers turns restarting position_ids into per-example attention (varlen kernels for
    flash_attention_2, a block-diagonal mask for sdpa/eager), so packed examples never attend to each other;
    tests/train/test_tokenize.py checks that per-example losses match the unpacked ones."""
    from transformers import DataCollatorWithFlattening  # heavy

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
