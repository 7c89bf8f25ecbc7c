"""What watches a training run: a non-finite-loss guard, a progress bar with tokens/s, and the answer metric."""

from __future__ import annotations

import math
import time

import numpy as np
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback

from tunewise.data.encode import IGNORE


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
    """The Trainer's tqdm bar (steps, ETA) with training tokens/s beside it (all devices: Trainer gathers the
    token count), and the steady rate after the first optimizer step, which carries one-off costs (CUDA and
    NCCL start-up, FSDP's first all-gathers, the allocator growing) that would blur a speed comparison."""

    _first: tuple[float, int] | None = None
    _last: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._start, self._tokens0 = time.perf_counter(), state.num_input_tokens_seen
        self._first = self._last = None

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        now = (time.perf_counter(), state.num_input_tokens_seen)
        self._first, self._last = self._first or now, now
        if state.is_world_process_zero and self.training_bar is not None:
            rate = (now[1] - self._tokens0) / max(1e-9, now[0] - self._start)
            self.training_bar.set_postfix_str(f"{rate:,.0f} tok/s", refresh=False)

    @property
    def steady_tokens_per_second(self) -> float | None:
        if self._first is None or self._last[0] <= self._first[0]:
            return None
        return (self._last[1] - self._first[1]) / (self._last[0] - self._first[0])

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
