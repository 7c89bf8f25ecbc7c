"""Wire the Trainer: arguments, collators, early stopping, TensorBoard/MLflow, progress bar."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.errors import ConfigError
from tunewise.metrics import training_metric
from tunewise.train.callbacks import GuardedTrainer, TokensProgressCallback, answer_metrics, argmax_logits
from tunewise.train.distributed import grad_accum, is_main_process, uses_fsdp
from tunewise.train.gen_metric import GeneratedMetric
from tunewise.train.tokenize import PadCollator, packed_collator

# What the user exported before tunewise ran; tunewise's own per-run settings never count as the user's.
_USER_MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI")
_USER_MLFLOW_EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME")


class _Trainer(GuardedTrainer):
    """Evaluation always uses the padding collator: the answer metric needs one row per example."""

    eval_collator = None
    causal_padding = False  # right-padded batches go to the model without their padding mask

    def _causal(self, inputs: dict) -> dict:
        """The batch without its attention mask where the mask is right padding alone: under causal attention the
        real tokens never see the padding after them (its labels are ignored), so their outputs are the same, and
        SDPA runs its causal kernel instead of a masked one. A new dict: the Trainer counts the non-padding tokens
        from the mask after the step."""
        mask = inputs.get("attention_mask")
        if not self.causal_padding or mask is None or mask.dim() != 2 or "position_ids" in inputs:
            return inputs
        if not (bool(mask[:, 0].all()) and bool((mask[:, 1:] <= mask[:, :-1]).all())):
            return inputs  # left padding, or holes: the mask is needed
        return {k: v for k, v in inputs.items() if k != "attention_mask"}

    def training_step(self, model, inputs, num_items_in_batch=None):
        return super().training_step(model, self._causal(inputs), num_items_in_batch)

    # Between two optimizer steps transformers walks the whole module tree three times (FLOP count, gradient
    # clipping, zero_grad): 12.3-15.9 ms of host time per step at Llama-3-8B's 2,665 PEFT modules on the development
    # CPU (bench/train_speed/step_bookkeeping.py), while the GPU waits. The parameter count and the trainable
    # parameters do not change while training, so each is found once.
    _flos_params: int | None = None
    _trainable: list | None = None

    def floating_point_ops(self, inputs: dict) -> int:
        main = getattr(self.model, "main_input_name", "input_ids")
        if main not in inputs or not hasattr(self.model, "num_parameters"):
            return super().floating_point_ops(inputs)
        if self._flos_params is None:
            self._flos_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main].numel() * self._flos_params  # transformers' own count

    def trainable_parameters(self, model) -> list:
        if self._trainable is None:
            self._trainable = [p for p in model.parameters() if p.requires_grad]
        return self._trainable

    def _clip_grad_norm(self, model):
        # FSDP, DeepSpeed and DTensor gradients clip through their own paths, which need the module
        mixed_mesh = getattr(self, "_has_mixed_mesh_grads", lambda _: False)(model)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled or mixed_mesh:
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_(self.trainable_parameters(model), self.args.max_grad_norm)

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        model = self.model

        def zero_grad(set_to_none: bool = True) -> None:
            """Module.zero_grad over the trainable parameters alone: frozen ones never get a gradient."""
            for p in self.trainable_parameters(model):
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.requires_grad_(False)
                    p.grad.zero_()

        # the training loop calls model.zero_grad() once per step; an instance attribute, as accelerate wraps forward
        model.zero_grad = zero_grad
        return optimizer

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:  # the trained model goes on without a hold on this Trainer (its optimizer state)
            self.model.__dict__.pop("zero_grad", None)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        return super().prediction_step(model, self._causal(inputs), prediction_loss_only, ignore_keys)

    def _get_train_sampler(self, train_dataset=None):
        from transformers.trainer_pt_utils import LengthGroupedSampler  # heavy

        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            # transformers sizes its length groups by per-device batch × grad_accum, which changes with the
            # device count; grouping by the global batch gives the same example order on 1 GPU or N.
            args = self.args
            sampler.batch_size = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        return sampler

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator


def _schedule(cfg: RunConfig, has_val: bool) -> dict:
    """Evaluation and checkpoint cadence; the best checkpoint is kept (and loaded at the end) when they align."""
    t = cfg.train
    ev = {"eval_strategy": "steps", "eval_steps": t.eval_steps} if t.eval_steps else {"eval_strategy": "epoch"}
    if not has_val:
        ev = {"eval_strategy": "no"}
    save = {"save_strategy": "steps", "save_steps": t.save_steps or t.eval_steps} if (t.save_steps or t.eval_steps) \
        else {"save_strategy": "epoch"}
    aligned = has_val and ev["eval_strategy"] == save["save_strategy"] and (
        save["save_strategy"] == "epoch" or save["save_steps"] % t.eval_steps == 0)
    if t.early_stopping.patience and not aligned:
        raise ConfigError("config: train.early_stopping needs a validation split and checkpoints at evaluations "
                          "(set train.save_steps to a multiple of train.eval_steps, or neither)")
    metric = training_metric(t.early_stopping.metric)
    best = {"load_best_model_at_end": True, "metric_for_best_model": metric.key,
            "greater_is_better": metric.greater_is_better} if aligned else {}
    return {**ev, **save, **best}


def _reporters(cfg: RunConfig, run_dir: Path) -> tuple[list[str], list]:
    """report_to names for Trainer, plus callbacks we build ourselves; packages that are missing are skipped."""
    names, callbacks = [], []
    # Rank 0 only: a writer opens its event file at once, and the others would leave empty ones beside it.
    if "tensorboard" in cfg.train.report_to and importlib.util.find_spec("tensorboard") and is_main_process():
        from torch.utils.tensorboard import SummaryWriter  # heavy
        from transformers.integrations import TensorBoardCallback  # heavy

        # Our own writer: Trainer's default folder is inside checkpoints/, which a fresh run clears.
        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(run_dir / "tensorboard"))))
    if "mlflow" in cfg.train.report_to and importlib.util.find_spec("mlflow"):
        # Transformers' MLflow callback reads these from the environment. Unless the user set them, each run
        # logs to a SQLite store in its own folder (MLflow 3 refuses the old ./mlruns file store by default).
        os.environ["MLFLOW_TRACKING_URI"] = _USER_MLFLOW_URI or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        os.environ["MLFLOW_EXPERIMENT_NAME"] = _USER_MLFLOW_EXPERIMENT or cfg.name
        names.append("mlflow")
    return names, callbacks


def _checkpointing(on: bool) -> dict:
    from transformers import TrainingArguments  # heavy

    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing; accept both.
    name = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ \
        else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False}}


def _fsdp(cfg: RunConfig, layers: list[str], checkpointing: bool) -> dict:
    """FSDP2 through TrainingArguments when train.fsdp is set (under torchrun). Each decoder layer is its own
    shard unit. PEFT needs nothing special with FSDP2: it shards per parameter, so frozen base weights and
    trainable adapters can share a layer (FSDP1 needed use_orig_params or peft's wrap policy for that). Under
    `accelerate launch` with an FSDP config the launcher's settings are used instead."""
    if not (cfg.train.fsdp and uses_fsdp(cfg)):
        return {}
    return {"fsdp": True, "fsdp_config": {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": layers,
        "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT",
        # FSDP's own checkpointing: transformers warns that the Trainer's one all-gathers twice under FSDP.
        "activation_checkpointing": checkpointing}}


def training_args(cfg: RunConfig, out_dir: Path, device: str, packing: bool, has_val: bool,
                  trainer_checkpointing: bool | None = None, fsdp_layers: list[str] | None = None,
                  micro_batch: int | None = None):
    """trainer_checkpointing: whether the Trainer switches activation checkpointing on (default:
    train.gradient_checkpointing); False when the fast path already did, for a chosen share of the layers.
    fsdp_layers: the decoder layer class names FSDP wraps one by one. micro_batch: the fast path's split of
    each device batch (train.fast.micro_batch_size): more accumulation steps of fewer examples, the same
    examples per optimizer step."""
    from transformers import TrainingArguments  # heavy

    t = cfg.train
    micro = micro_batch or t.batch_size
    checkpointing = t.gradient_checkpointing if trainer_checkpointing is None else trainer_checkpointing
    fsdp = _fsdp(cfg, fsdp_layers or [], checkpointing)
    return TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=grad_accum(cfg) * (t.batch_size // micro),
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        label_smoothing_factor=t.label_smoothing,
        neftune_noise_alpha=t.neftune_alpha,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float < 1 here is a ratio of total steps
        lr_scheduler_type="cosine",
        logging_steps=t.logging_steps,
        save_total_limit=t.save_total_limit,
        **_schedule(cfg, has_val),
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        full_determinism=t.deterministic,
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        **_checkpointing(checkpointing and not fsdp),
        **fsdp,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        # Sorting by length cuts padding, which on CPU is most of the wasted time; packing has none to cut.
        train_sampling_strategy="random" if packing else "group_by_length",
        include_num_input_tokens_seen="all" if packing else "non_padding",
        restore_callback_states_from_checkpoint=True,  # early stopping's patience survives --resume
        ddp_find_unused_parameters=False,
    )


def build_trainer(cfg: RunConfig, model, tokenizer, enc, out_dir: Path, device: str, packing: bool,
                  callbacks: list, trainer_checkpointing: bool | None = None,
                  micro_batch: int | None = None, pad_buckets: list[int] | None = None,
                  pad_multiple: int = 1, causal_padding: bool = False) -> GuardedTrainer:
    from transformers import EarlyStoppingCallback  # heavy
    from transformers.trainer_callback import ProgressCallback  # heavy

    has_val = bool(enc.val)
    layers = sorted(getattr(model, "_no_split_modules", None) or [])  # the decoder layer, e.g. LlamaDecoderLayer
    args = training_args(cfg, out_dir, device, packing, has_val, trainer_checkpointing, layers, micro_batch)
    names, reporters = _reporters(cfg, cfg.run_dir)
    args.report_to = names
    # evaluation: no graphs to replay, so no buckets; widths still repeat for the attention kernels' set-up
    pad = PadCollator(tokenizer.pad_token_id, multiple=pad_multiple, cap=max(map(len, (e.input_ids for e in enc.val)),
                                                                             default=None))
    extra = [*reporters, *callbacks]
    es = cfg.train.early_stopping
    if es.patience and has_val:
        extra.append(EarlyStoppingCallback(es.patience, es.threshold))
    metrics = answer_metrics
    if has_val and enc.val_answers is not None:
        metrics = GeneratedMetric(enc.val_answers, tokenizer, cfg.eval.batch_size)
    trainer = _Trainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=[e.to_features() for e in enc.train],
        eval_dataset=[e.to_features() for e in enc.val] or None,
        data_collator=packed_collator() if packing else PadCollator(tokenizer.pad_token_id, pad_buckets,
                                                                    pad_multiple, max(enc.lengths, default=None)),
        compute_metrics=metrics if has_val else None,
        preprocess_logits_for_metrics=argmax_logits if has_val else None,
        callbacks=extra,
    )
    trainer.eval_collator, trainer.causal_padding = pad, causal_padding
    if isinstance(metrics, GeneratedMetric):
        metrics.trainer = trainer  # generates with the model as the Trainer holds it at each evaluation
    trainer.remove_callback(ProgressCallback)
    trainer.progress = TokensProgressCallback()
    trainer.add_callback(trainer.progress)
    return trainer
