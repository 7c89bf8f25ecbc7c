"""What watches a training run: a non-finite-loss guard, a progress bar with tokens/s, and the answer metric."""

from __future__ import annotations

import math
import time

import numpy as np
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback

from tunewise.train.tokenize import IGNORE


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float):
        super().__init__(f"loss became {value} at step {step}")
        self.step, self.value = step, value


class GuardedTrainer(Trainer):
    """Trainer that stops on the first NaN/inf loss, before the optimizer applies it.

    A TrainerCallback only sees the loss at logging steps, after the optimizer step, so the weights (and the
    next checkpoint) would already be poisoned; checking the micro-batch loss here stops at once."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        value = loss.detach().float().item()
        if not math.isfinite(value):
            raise NonFiniteLoss(self.state.global_step + 1, value)
        return loss


class TokensProgressCallback(ProgressCallback):
    """The Trainer's tqdm bar (steps, ETA) with training tokens/s beside it."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._start, self._tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        if state.is_world_process_zero and self.training_bar is not None:
            rate = (state.num_input_tokens_seen - self._tokens0) / max(1e-9, time.perf_counter() - self._start)
            self.training_bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass  # the default prints every log dict under the bar; the metrics go to TensorBoard/MLflow instead


def argmax_logits(logits, labels):
    """Keep only the argmax during evaluation: the full logits of a val set would not fit in memory."""
    return logits.argmax(dim=-1)


def answer_metrics(pred) -> dict[str, float]:
    """eval_answer_exact_match: share of val examples whose every answer token is predicted right."""
    preds, labels = np.asarray(pred.predictions), np.asarray(pred.label_ids)
    preds, labels = preds[:, :-1], labels[:, 1:]  # the logit at t predicts the token at t+1
    mask = labels != IGNORE
    right = (preds == labels) | ~mask
    has_answer = mask.any(axis=1)
    exact = right.all(axis=1)[has_answer]
    return {"answer_exact_match": float(exact.mean()) if exact.size else 0.0}
