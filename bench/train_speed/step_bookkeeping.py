"""Host time of the Trainer's bookkeeping between two optimizer steps (the FLOP count, gradient clipping,
zero_grad), transformers' own beside tunewise's Trainer, on a PEFT LoRA model with the layer count of a real shape
and tiny widths: the time is spent walking modules and parameters, not in arithmetic. CPU is enough:

  python -m bench.train_speed.step_bookkeeping                # 32 layers: Llama-3-8B's count
  python -m bench.train_speed.step_bookkeeping --layers 16    # Llama-3.2-1B's
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def _ms(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=50)
    a = ap.parse_args()

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from tunewise.train.trainer import _Trainer

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=a.layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=512)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, target_modules="all-linear"))
    with tempfile.TemporaryDirectory() as out:
        trainer = _Trainer(model=model, args=TrainingArguments(output_dir=out, report_to=[], use_cpu=True,
                                                               max_grad_norm=1.0))
        trainer.create_optimizer()
        trainable = trainer.trainable_parameters(model)  # the list its clipping and zero_grad go over
        inputs = {"input_ids": torch.zeros(8, 64, dtype=torch.long)}

        def with_grads(zero):
            def run():
                for p in trainable:
                    p.grad = torch.zeros_like(p)
                zero()
            return run

        fill = _ms(with_grads(lambda: None), a.repeat)  # setting the gradients alone, taken off both zero_grad rows
        rows = [
            ("FLOP count", _ms(lambda: Trainer.floating_point_ops(trainer, inputs), a.repeat),
             _ms(lambda: trainer.floating_point_ops(inputs), a.repeat)),
            ("gradient clipping", _ms(lambda: Trainer._clip_grad_norm(trainer, model), a.repeat),
             _ms(lambda: trainer._clip_grad_norm(model), a.repeat)),
            ("zero_grad", _ms(with_grads(lambda: torch.nn.Module.zero_grad(model)), a.repeat) - fill,
             _ms(with_grads(model.zero_grad), a.repeat) - fill),
        ]
    modules, params = len(list(model.modules())), len(list(model.parameters()))
    print(f"PEFT LoRA (all linear, r=16) on a {a.layers}-layer Llama: {modules:,} modules, {params} parameters "
          f"({len(trainable)} trainable); ms per optimizer step, mean over {a.repeat} calls\n")
    print("| bookkeeping | transformers' Trainer | tunewise's | saved |\n|---|---|---|---|")
    for name, theirs, ours in rows:
        print(f"| {name} | {theirs:.2f} | {ours:.2f} | {theirs - ours:.2f} |")
    theirs, ours = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| **all three** | **{theirs:.2f}** | **{ours:.2f}** | **{theirs - ours:.2f}** |")


if __name__ == "__main__":
    main()
