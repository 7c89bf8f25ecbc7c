"""The one config schema. A run is described by a single YAML file validated by `RunConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunewise.errors import ConfigError
from tunewise.metrics import training_metric
from tunewise.metrics.user import is_user_metric

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
# The record formats tunewise reads, in the order `format: auto` tries them (tunewise.data.formats).
RecordFormat = Literal["chat", "sharegpt", "alpaca", "prompt_completion", "text_label"]
FORMATS: tuple[str, ...] = get_args(RecordFormat)
# Field names of the supported record formats (data.columns maps them onto a file's columns).
CANONICAL_FIELDS = {"text", "label", "messages", "instruction", "input", "output", "prompt", "completion",
                    "conversations"}


class _Strict(BaseModel):
    # Unknown keys are a typo far more often than an intention: reject them.
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Strict):
    """Sizes of the held-out splits: a float in (0, 1) is a fraction, an int is a count."""

    val: float | int = 0.1
    test: float | int = 0.1
    seed: int | None = Field(None, description="seed of the split (default: the run's seed); pin it when runs that "
                             "differ only in `seed` must share one split, e.g. the ingredients of a model soup")


class DedupConfig(_Strict):
    exact: bool = Field(True, description="collapse rows identical after normalisation (case, spacing, Unicode)")
    near: bool = Field(True, description="collapse near duplicates (MinHash LSH over character 5-grams)")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of near duplicates")
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations (LSH candidate recall vs speed)")


class DataConfig(_Strict):
    builtin: Literal["bbc_news"] | None = Field(
        None, description="a dataset shipped with tunewise instead of files"
    )
    paths: list[Path] = Field(default_factory=list, description="JSONL/CSV files (train+val+test pool)")
    test_paths: list[Path] = Field(
        default_factory=list, description="an official test set; then only val is carved from `paths`"
    )
    official_test: Literal["as_published", "deduplicated"] = Field(
        "as_published",
        description="test_paths rows kept exactly as published (leaks into train reported, not removed) so "
                    "results compare with published figures; or deduplicated and de-leaked like carved splits",
    )
    text_field: str = "text"
    label_field: str = "label"
    format: Literal[Literal["auto"], RecordFormat] = Field(
        "auto", description="record format of every file; auto detects it per file from the first rows"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="canonical field → column in your files, e.g. {prompt: question, completion: answer}",
    )
    pii: Literal["report", "redact", "drop"] = Field(
        "redact", description="personal data and secrets: count them (report), replace them by <EMAIL>… "
        "(redact), or quarantine the row (drop)"
    )
    pii_region: str = Field(
        "US", pattern=r"^[A-Z]{2}$", description="region whose national phone formats are read as phone numbers "
        "(ISO 3166 code: US, GB, DE, IN…); international +CC numbers are found for every country"
    )
    pii_engine: Literal["builtin", "presidio"] = Field(
        "builtin", description="builtin: machine-shaped PII and secrets, fast; presidio: also names, places and "
        "dates of birth (pip install 'tunewise[presidio]' and a spaCy model; ~100x slower)"
    )
    dedup: DedupConfig = DedupConfig()
    group_column: str | None = Field(
        None, description="rows sharing this column's value stay in one split; it may be the input column itself "
        "(E2E: mr, so no meaning representation is in two splits)")
    group_test_references: bool = Field(
        True, description="generation tasks: test rows with the same input become one test example scored "
        "against all their references (multi-reference BLEU/chrF, best-reference ROUGE), as E2E is scored")
    slice_columns: list[str] = Field(default_factory=list, description="columns to audit label balance within")
    max_row_chars: int = Field(200_000, gt=0, description="rows longer than this are quarantined unread")
    workers: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="processes for the per-row checks; auto: min(2, CPUs) for inputs over ~20k rows "
        "(~4 MiB), 1 (serial) below; the result is identical either way"
    )
    min_rows: int = Field(1000, ge=0, description="warn when fewer usable rows remain")
    min_class_examples: int = Field(20, ge=0, description="warn when a class has fewer examples")
    label_issues: Literal["report", "drop", "off"] = Field(
        "report", description="classification rows whose label looks wrong (cleanlab on out-of-fold TF-IDF + "
        "logistic regression): list them on the card (report), quarantine them from training (drop), or skip"
    )
    split: SplitConfig = SplitConfig()
    max_train_examples: int | None = Field(None, gt=0, description="subsample training (CPU budgets)")
    max_test_examples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if not self.builtin and not self.paths:
            raise ValueError("set either data.builtin or data.paths")
        unknown = set(self.columns) - CANONICAL_FIELDS
        if unknown:
            raise ValueError(f"unknown canonical field(s) in data.columns: {sorted(unknown)}; "
                             f"known: {sorted(CANONICAL_FIELDS)}")
        for p in [*self.paths, *self.test_paths]:
            if not Path(p).exists():
                raise ValueError(f"file not found: {p}")
        return self


class TaskConfig(_Strict):
    type: Literal["classification", "generation", "extraction"] = Field(
        "classification", description="classification: a label; generation: free text; extraction: one JSON object "
        "(scored field by field)")
    instruction: str = "Classify the text."
    labels: list[str] | None = Field(None, description="label set; inferred from the data when omitted")
    system_prompt: str | None = Field(
        "You are a precise assistant. Answer with the label only.",
        description="None keeps the model's default system prompt",
    )
    list_labels_after_tuning: bool = Field(
        False, description="keep the label list in the fine-tuned model's prompt (baselines always get it)"
    )
    json_schema: Path | dict | None = Field(
        None, description="extraction: a JSON Schema (a file or an inline mapping); outputs are checked against it "
        "(json_schema_valid) with the jsonschema package")


class ModelConfig(_Strict):
    base: str = Field(EMBEDDED_MODEL, description="embedded:<name>, a local HF folder, or a .gguf file")
    cache_dir: Path | None = Field(None, description="converted models; default ~/.cache/tunewise/models")
    max_length: int = Field(256, gt=8, description="tokens per training example (longer ones are left out)")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "flex_attention"] = Field(
        "auto", description="auto: flash_attention_2 on CUDA when installed; for a model transformers cannot run "
        "with SDPA (Gemma 2: soft-capped attention logits) flex_attention on CUDA, eager on CPU; else sdpa. "
        "flex_attention needs CUDA (no backward on CPU)"
    )


class LoraConfig(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(
        0.0, ge=0, lt=1,
        description="LoRA dropout on the adapter input. 0 (PEFT's own default): on Banking77 validation over 4 seeds "
        "0.05 was no better (0 scored +0.030 accuracy, CI +0.013 to +0.048; bench/results/lora_dropout_quality.md), "
        "and on the fast path it costs ~14 % of the tokens/s")
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class EarlyStoppingConfig(_Strict):
    patience: int | None = Field(None, gt=0, description="evaluations without improvement before stopping; None = off")
    metric: str = Field(
        "eval_loss", description="what picks the best checkpoint and stops early: eval_loss, "
        "eval_answer_exact_match (teacher-forced), or a metric of generated val answers: rouge_l, bleu, chrf, "
        "exact_match, slot_error_rate (generation), json_f1, json_valid... (extraction), or a user "
        "module:function; lower is better for losses and error rates")
    threshold: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    max_generate: int = Field(
        200, gt=0, description="with a generated-answer metric: distinct val inputs answered at each evaluation "
        "(the first ones, greedy decoding); each evaluation then costs a generation pass over them")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        training_metric(v)
        return v


class ReplayConfig(_Strict):
    """Forgetting mitigation: mix general instruction data into the training set."""

    fraction: float = Field(0.0, ge=0, lt=1, description="share of the final training set that is replay data")
    path: Path | None = Field(None, description="JSONL of {prompt, completion} or {messages}; default: shipped set")


class FastConfig(_Strict):
    """The fast training path (tunewise.train.fast). Each component can be switched off to measure it."""

    enabled: Literal["auto"] | bool = Field(
        "auto", description="auto: on for CUDA and a covered decoder family (llama, mistral, qwen2, qwen3, gemma2, "
        "gemma3_text), plain transformers + PEFT otherwise; one log line says which path runs and why")
    loss: Literal["auto", "chunked", "liger", "off"] = Field(
        "auto", description="LM head + cross-entropy without the full logits: chunked (pure torch), liger "
        "(Liger Kernel's fused kernel, CUDA), auto = liger when installed on CUDA, else chunked; off = plain")
    loss_chunk_tokens: int = Field(1024, gt=0, description="tokens per LM-head chunk ([chunk, vocab] fp32 live)")
    kernels: Literal["auto"] | bool = Field(
        "auto", description="Liger Kernel's fused RMSNorm, SwiGLU and RoPE (CUDA, when liger-kernel is installed)")
    rms_norm: Literal["torch", "liger"] = Field(
        "torch", description="with kernels: the RMSNorm kernel: torch's fused one (an aten op: less host time "
        "per call, which the LoRA path is limited by) or Liger's Triton one")
    fused_lora: bool = Field(True, description="LoRA layers as one autograd function (no input copy, fused add; "
                             "no dropout mask kept: backward draws it again)")
    grouped_lora: bool = Field(
        True, description="with fused_lora: the q/k/v and the gate/up LoRA projections, which read the same input, "
        "as one group each (stacked A matrices, one input gradient); with LoRA dropout each member draws its "
        "own mask, as PEFT does (none is kept: backward draws them again)")
    checkpoint_layers: Literal["auto"] | Annotated[float, Field(ge=0, le=1)] = Field(
        "auto", description="share of decoder layers checkpointed when train.gradient_checkpointing is on (spread "
        "evenly); the others keep activations and skip the recompute. auto: the automatic plan's choice (LoRA on "
        "CUDA), else 1")
    compile: bool = Field(False, description="torch.compile each decoder layer (falls back to eager on failure)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile's mode; reduce-overhead adds CUDA graphs (fewer kernel launches)")
    sdpa_backend: Literal["default", "cudnn", "flash", "efficient"] = Field(
        "default", description="SDPA attention kernel tried first: default = torch's own order; cudnn = cuDNN's "
        "fused attention; flash = FlashAttention-2; efficient = the memory-efficient kernel (CUDA; the next backend "
        "in line where it cannot run)")
    freeze_gc: bool = Field(
        True, description="gc.freeze() when training starts: Python's full garbage collections then skip the "
        "model and optimizer (they stall the CPU that feeds the GPU); cycles made later are still collected")
    recompute_elementwise: Literal["auto"] | bool = Field(
        "auto", description="layers that are not checkpointed keep recipes instead of the RMSNorm outputs and the "
        "SwiGLU product that LoRA layers save, and recompute them in backward (same kernels, same values): less "
        "memory for a few elementwise passes. auto: the automatic plan's choice (LoRA on CUDA), else false")
    micro_batch_size: Literal["auto"] | Annotated[int, Field(gt=0)] | None = Field(
        "auto", description="split each device batch of train.batch_size into micro-batches of this many "
        "examples (gradient accumulation: the same examples per optimizer step, the same loss). The fast path's "
        "smaller activations let a smaller micro-batch train with checkpoint_layers 0 (no recompute) in the "
        "memory the plain path needs with checkpointing on every layer; it must divide train.batch_size. null: "
        "no split; auto: the automatic plan's choice (LoRA on CUDA), else no split")
    memory_budget_gib: float | None = Field(
        None, gt=0, description="the most the automatic plan's predicted peak may be, weights included (GiB per "
        "device); default: 90 % of what the GPU has free when training starts plus what this process holds")
    offload_kept_layers: Literal["auto"] | Annotated[int, Field(ge=0)] = Field(
        "auto", description="this many decoder layers that are not checkpointed (spread evenly from the first) send "
        "what they save for backward to pinned CPU memory during the forward and get it back ahead of their backward, "
        "on copy streams beside the compute (CUDA): memory without recompute, as fast as the host link allows. auto: "
        "the automatic plan's choice (LoRA on CUDA, on GPUs whose host link rate is measured, else none); 0 = never")
    cuda_graphs: Literal["auto"] | bool = Field(
        "auto", description="run the decoder stack's forward and backward as two CUDA graphs (one launch each: the "
        "host no longer limits the step), one pair per batch shape, captured the second time a shape comes (up to "
        "12 shapes; others run eagerly). On CUDA for LoRA/QLoRA with dropout 0 on llama, mistral, qwen2, qwen3 (full "
        "attention), one process, no offloaded layers and no compile; the log line says why not otherwise. auto: "
        "micro-steps of at most 2,048 tokens (where the host limits the step); true: any size")
    causal_padding: Literal["auto"] | bool = Field(
        "auto", description="right-padded batches reach attention without their padding mask: causal attention "
        "alone gives every real token the same output (the padding comes after it, and its labels are ignored), and "
        "SDPA then runs its causal kernel instead of one reading a [rows, 1, width, width] mask (on the H200 3.3x "
        "faster at 4,000 tokens). auto: on CUDA with sdpa attention")
    bucket_padding: Literal["auto"] | bool = Field(
        "auto", description="pad each training batch (not packed ones) to the first of a few widths that holds it "
        "(64, 96, 128, 192, ..., the longest example; at most half a row of padding) instead of its longest row, so "
        "that batch shapes repeat and the CUDA graphs replay them. auto: when the decoder stack is graphed "
        "(cuda_graphs)")
    offload_activations: Literal["auto"] | bool = Field(
        "auto", description="with gradient_checkpointing: keep each checkpointed decoder layer's input in CPU "
        "memory (not pinned) from its forward until its backward, while the host has room (else it stays on the "
        "GPU). auto = on CUDA when one micro-batch's layer inputs would take over a quarter of the GPU memory the "
        "process may use (Llama-3-8B on 80 GiB: over ~82k tokens); the long-context setting (tunewise.train.fast."
        "longctx)")
    tile_mlp_tokens: Literal["auto"] | Annotated[int, Field(ge=0)] = Field(
        "auto", description="micro-batches with more tokens than this run each decoder layer's MLP this many "
        "tokens at a time, each tile checkpointed on its own, so the [tokens, intermediate] activations never exist "
        "whole (one more MLP forward per tile in backward); 0 = never; auto = 8192-token tiles when "
        "offload_activations auto would offload (long context on CUDA)")


class TrainConfig(_Strict):
    method: Literal["lora", "dora", "qlora", "full"] = "lora"
    lora: LoraConfig = LoraConfig()
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    global_batch_size: int | None = Field(
        None, gt=0, description="examples per optimizer step on all devices; sets grad_accum from the device count"
    )
    fsdp: bool = Field(False, description="under torchrun with several GPUs: shard with FSDP2 instead of DDP")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the answer-token loss")
    neftune_alpha: float | None = Field(
        None, gt=0, description="NEFTune: noise on input embeddings while training (e.g. 5); None = off"
    )
    eval_batch_size: int = Field(16, gt=0)
    logging_steps: int = Field(5, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="evaluate (and checkpoint) every N steps; None = per epoch")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N steps when eval_steps is None")
    save_total_limit: int = Field(2, gt=0, description="checkpoints kept (the best one is always kept)")
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    packing: Literal["auto"] | bool = Field(
        "auto", description="padding-free packing; auto = on where attention is varlen (CUDA + flash_attention_2)"
    )
    pad_to_multiple_of: Literal["auto"] | Annotated[int, Field(gt=0)] = Field(
        "auto", description="pad each batch that is not packed (training and evaluation) to a width that is a "
        "multiple of this many tokens, so that batch shapes repeat: on CUDA SDPA's cuDNN attention sets up each new "
        "shape once. auto: 64 on CUDA, 1 (the batch's longest row) elsewhere; fast.bucket_padding's widths, where "
        "on, come first")
    gradient_checkpointing: bool = False
    fast: FastConfig = Field(FastConfig(), description="the fast path; `fast: false` (or true/auto) is short for "
                             "fast.enabled")
    deterministic: bool = Field(False, description="deterministic kernels (slower on GPU)")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard", "mlflow"], description="each used when its package is installed"
    )
    replay: ReplayConfig = ReplayConfig()

    @field_validator("fast", mode="before")
    @classmethod
    def _fast_shorthand(cls, v):
        return {"enabled": v} if isinstance(v, bool) or v == "auto" else v


class EstimateConfig(_Strict):
    """What `tunewise estimate` prices the run on. Prices default to tunewise.models.prices."""

    device: str = Field("H100", description="a device in the table (H200, H100, A100, L4, RTX4090, CPU); a "
                        "full name such as 'NVIDIA H200' works too")
    gpus: int = Field(1, gt=0)
    prices: dict[str, float] = Field(
        default_factory=dict, description="{gpu_name: USD per device-hour}: overrides the default prices "
        "(a key naming a known device, e.g. 'NVIDIA H200', replaces its price) and prices other devices")
    mfu: float | None = Field(None, gt=0, le=1, description="model FLOPs utilisation; default per device")


class TuneParam(_Strict):
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[float | int | str] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> TuneParam:
        if self.choices is None and (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        return self


class TuneConfig(_Strict):
    trials: int = Field(10, gt=0)
    metric: Literal["eval_loss", "eval_answer_exact_match"] = "eval_loss"
    space: dict[str, TuneParam] = Field(
        default_factory=lambda: {"learning_rate": TuneParam(low=5e-5, high=1e-3, log=True),
                                 "lora.r": TuneParam(choices=[8, 16, 32])},
        description="keys are train.* paths, e.g. learning_rate, lora.r, lora.alpha, epochs",
    )


class ForgettingConfig(_Strict):
    """General ability before vs after fine-tuning, on data unrelated to the task."""

    enabled: bool = True
    mc_path: Path | None = Field(None, description="JSONL {question, choices, answer}; default: the shipped set")
    prompts_path: Path | None = Field(
        None, description="JSONL {prompt, response} for the KL check; default: the shipped set")
    max_drop: float = Field(
        0.02, ge=0, lt=1, description="flag a drop in general multiple-choice accuracy when it is significant (the "
        "paired-bootstrap 95 % CI of tuned − base lies entirely below 0) and larger than this, in accuracy points "
        "(0.02 = 2 points); the shipped 508 questions detect a 5-point drop (docs/evaluation.md)")
    max_kl: float | None = Field(
        1.0, gt=0, description="flag a mean KL(base ‖ fine-tuned) above this many nats per token on the general "
        "prompts; None: report only. KL is the extra cross-entropy the fine-tuned model pays on the base model's "
        "own answers, so 1.0 flags a model that finds them e ≈ 2.7× less likely per token: well beyond a light "
        "adapter, and a narrow classifier's drift is caught (the banking77 full fine-tune soup measured 2.07; "
        "docs/evaluation.md). Raise it or set None for a model meant to answer only its task")

    @model_validator(mode="after")
    def _files_exist(self) -> ForgettingConfig:
        for p in (self.mc_path, self.prompts_path):
            if p is not None and not Path(p).is_file():
                raise ValueError(f"file not found: {p}")
        return self


class EvalConfig(_Strict):
    classification_mode: Literal["generate", "score"] = Field(
        "generate", description="generate: free answer parsed to a label (invalid rate counted); "
        "score: the label with the highest log-likelihood")
    few_shot_k: int = Field(5, ge=0, description="examples in the few-shot prompt")
    few_shot_selection: Literal["auto", "random", "similar", "tfidf"] = Field(
        "auto", description="random (class-balanced for classification); similar: the k training examples nearest "
        "by sentence embedding (all-MiniLM-L6-v2, optional package); tfidf: nearest by TF-IDF cosine of the "
        "inputs; auto: tfidf for generation and extraction (structured inputs such as E2E's meaning "
        "representations are matched by the values they share, and a shot then shows how those values are "
        "written; no extra package), random for classification (class balance shows every label)")
    classical: bool = Field(True, description="the classical baseline: TF-IDF + logistic regression "
                            "(classification), TF-IDF nearest-neighbour retrieval of a training answer (generation, "
                            "extraction)")
    slot_errors: Literal["auto"] | bool = Field(
        "auto", description="generation: slot error rate of data-to-text outputs (omitted and added attribute "
        "values of inputs like name[The Eagle], food[French]); auto: on when every test input is such a list")
    metrics: list[str] = Field(
        default_factory=list, description="user metrics, each module:function or path/to/file.py:function: a "
        "callable (predictions: list[str], references: list[str]) -> float, scored beside the built-in metrics "
        "with bootstrap CIs (one call per resample). It is the user's own code and runs in this process")
    batch_size: int = Field(16, gt=0, description="prompts per generation batch; examples per scoring batch")
    score_tokens_per_batch: int = Field(
        2048, gt=0, description="label scoring and perplexity: continuation rows × their length per forward "
        "pass; the logits are this × vocabulary, so it bounds memory (raise it on a large GPU)")
    max_new_tokens: int | None = Field(None, gt=0, description="default: longest label + 14 (classification)")
    perplexity: bool = Field(True, description="perplexity of the test answers (generation tasks)")
    bootstrap_resamples: int = Field(1000, ge=100, description="resamples for CIs and paired comparisons")
    review_examples: int = Field(10, ge=0, description="side-by-side examples in the report")
    forgetting: ForgettingConfig = ForgettingConfig()


class RegistryConfig(_Strict):
    url: str | None = Field(
        None, description="SQLAlchemy URL (postgresql+psycopg://...); default sqlite in the workspace, "
        "or $TUNEWISE_REGISTRY_URL")
    workspace: Path = Field(Path(".tunewise"), description="the SQLite file and registered model artifacts")
    alpha: float = Field(0.05, gt=0, lt=1, description="promotion gate: one-sided paired-bootstrap p-value")
    feedback_holdout: float = Field(
        0.3, gt=0, lt=1, description="retrain: share of the feedback corrections held out (seeded by the run's "
        "seed): the candidate trains on the rest and must beat production on these, which it never saw")
    feedback_holdout_min: int = Field(
        5, ge=1, description="retrain: the fewest corrections held out; fewer usable ones and retrain stops")


class ServeConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    max_tokens: int = Field(64, gt=0, description="the most new tokens a request may ask for")
    max_request_bytes: int = Field(64_000, gt=0)
    max_messages: int = Field(32, gt=0)
    max_batch_size: int = Field(16, gt=0, le=256, description="the most queued requests one generate call takes")
    auth: bool = Field(True, description="require a bearer API key (`tunewise keys create`)")
    public_metrics: bool = Field(
        False, description="with auth: serve /metrics and the model list without an API key (e.g. for a Prometheus "
        "scraper inside the network); default: they need one like every other route")


class MonitorConfig(_Strict):
    window: int = Field(500, gt=0, description="the most recent requests compared against training data")
    min_requests: int = Field(20, gt=0, description="fewer requests than this: no verdict")
    embedding_p_value: float = Field(0.01, gt=0, lt=1, description="MMD permutation test threshold")
    psi_threshold: float = Field(0.2, gt=0, description="PSI above this is drift (0.1 watch, 0.25 act)")
    permutations: int = Field(500, gt=10)


class OperateConfig(_Strict):
    """What serve/registry/monitor/retrain read: the operate sections of a run config, or a file of its own."""

    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()


class RunConfig(_Strict):
    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$")
    seed: int = 42
    output_dir: Path = Path("runs")
    task: TaskConfig = TaskConfig()
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    estimate: EstimateConfig = EstimateConfig()
    tune: TuneConfig = TuneConfig()

    @field_validator("output_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> RunConfig:
        try:
            training_metric(self.train.early_stopping.metric, self.task.type)
        except ValueError as err:
            raise ValueError(f"train.early_stopping.metric: {err}") from None
        bad = [m for m in self.eval.metrics if not is_user_metric(m)]
        if bad:
            raise ValueError(f"eval.metrics: {bad[0]!r} is not module:function (the built-in metrics always run)")
        if self.task.json_schema is not None and self.task.type != "extraction":
            raise ValueError("task.json_schema applies to task.type extraction only")
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def _first_error_line(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{source}: {where}: {msg}"


def parse_config(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_first_error_line(err, source)) from None


def _set_dotted(raw: dict, dotted: str, value) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {part} is not a section")
    node[leaf] = value


def parse_overrides(pairs: list[str]) -> dict:
    """`key.path=value` pairs from the command line; values are read as YAML (numbers, lists, booleans)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair}: expected key.path=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {pair}: value is not valid YAML") from None
    return out


def _read_yaml_mapping(path: Path) -> dict:
    """A YAML file whose top level is a mapping, or a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return raw


def _resolve_code_paths(raw: dict, folder: Path) -> None:
    """task.json_schema and file-form user metrics (`file.py:function`) are relative to the config's folder."""
    task, ev = raw.get("task"), raw.get("eval")
    schema = task.get("json_schema") if isinstance(task, dict) else None
    if isinstance(schema, str) and not Path(schema).is_absolute():
        task["json_schema"] = str((folder / schema).resolve())
    if isinstance(ev, dict) and isinstance(ev.get("metrics"), list):
        ev["metrics"] = [_relative_metric(m, folder) for m in ev["metrics"]]
    stopping = ((raw.get("train") or {}).get("early_stopping") if isinstance(raw.get("train"), dict) else None)
    if isinstance(stopping, dict) and isinstance(stopping.get("metric"), str):
        stopping["metric"] = _relative_metric(stopping["metric"], folder)


def _relative_metric(spec, folder: Path):
    if not isinstance(spec, str) or ".py:" not in spec or Path(spec.split(".py:")[0]).is_absolute():
        return spec
    module, function = spec.rsplit(":", 1)
    return f"{(folder / module).resolve()}:{function}"


def load_config(path: Path | str, overrides: dict | None = None) -> RunConfig:
    """Read a YAML config. Relative data paths are resolved against the config file's folder."""
    path = Path(path)
    raw = _read_yaml_mapping(path)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("paths", "test_paths"):
            if isinstance(data.get(key), list):
                data[key] = [str((path.parent / p).resolve()) if not Path(p).is_absolute() else p
                             for p in data[key]]
    _resolve_code_paths(raw, path.parent)
    forgetting = (raw.get("eval") or {}).get("forgetting") if isinstance(raw.get("eval"), dict) else None
    if isinstance(forgetting, dict):
        for key in ("mc_path", "prompts_path"):
            if isinstance(forgetting.get(key), str) and not Path(forgetting[key]).is_absolute():
                forgetting[key] = str((path.parent / forgetting[key]).resolve())
    return parse_config(raw, str(path))


def load_operate_config(path: Path | str | None) -> OperateConfig:
    """The operate sections from a YAML file: a full run config (its registry/serve/monitor keys) or a file
    holding only those keys. No file: the defaults."""
    if path is None:
        return OperateConfig()
    path = Path(path)
    raw = _read_yaml_mapping(path)
    if "data" in raw:
        run = load_config(path)
        return OperateConfig(registry=run.registry, serve=run.serve, monitor=run.monitor)
    try:
        return OperateConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_first_error_line(err, str(path))) from None


def dump_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
