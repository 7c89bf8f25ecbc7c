"""`run(cfg)`: the stages in order: data → baselines → train → evaluate → report. Nothing else.

Each stage is also callable alone (the CLI's subcommands); they share the run folder `runs/<name>/`."""

from __future__ import annotations

import json
import platform
import time
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

from tunewise.config import RunConfig, dump_config
from tunewise.data import PreparedData, prepare
from tunewise.evaluate import EvalResult, evaluate, run_baselines
from tunewise.models import ResolvedModel, load_model, resolve_model
from tunewise.report import export_review, write_report
from tunewise.train import TrainResult, reproducibility, train
from tunewise.train.distributed import bind_device, is_main_process, main_process_first

LIBRARIES = ["torch", "transformers", "peft", "accelerate", "tunewise"]


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = None
    return out


class RunFolder:
    """The run's folder and its manifest, updated after every stage so a crash leaves a truthful record."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.path = cfg.run_dir
        self.path.mkdir(parents=True, exist_ok=True)
        if is_main_process():
            dump_config(cfg, self.path / "config.yaml")
        mpath = self.path / "manifest.json"
        # Under torchrun only rank 0 reads and writes it: another rank could read it half written.
        self.manifest = json.loads(mpath.read_text()) if mpath.is_file() and is_main_process() else {}
        self.manifest.update({"name": cfg.name, "task": cfg.task.type, "seed": cfg.seed, "libraries": _versions()})
        self.manifest.setdefault("stage_seconds", {})
        self.save()

    def save(self) -> None:
        if not is_main_process():  # under torchrun every rank runs this; one writer is enough
            return
        (self.path / "manifest.json").write_text(json.dumps(self.manifest, indent=2))

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.manifest["stage_seconds"][name] = round(time.perf_counter() - start, 2)
        self.save()


def stage_data(cfg: RunConfig, run: RunFolder) -> PreparedData:
    # Rank 0 first: it fills the model cache (a GGUF conversion for token counts) that the others then read.
    with run.stage("data"), main_process_first():
        data = prepare(cfg)
        if is_main_process():
            data.write(run.path / "data")
        run.manifest["dataset"] = {"content_hash": data.content_hash, **data.summary()}
    return data


def stage_model(cfg: RunConfig, run: RunFolder) -> ResolvedModel:
    with run.stage("model"), main_process_first():
        base = resolve_model(cfg.model.base, cfg.model.cache_dir)
        run.manifest["base_model"] = {"id": base.model_id, "sha256": base.sha256, "path": str(base.path)}
    return base


def write_results(run: RunFolder, data: PreparedData, result: EvalResult) -> dict:
    """metrics.json (every system's metrics, CIs, costs, comparisons, forgetting, verdict) and
    predictions.jsonl (per test example: each system's output and per-example score, for review and for
    paired comparisons of later models on the same frozen test set)."""
    metrics = result.metrics_json()
    metrics["dataset_hash"] = data.content_hash
    if not is_main_process():  # under torchrun every rank evaluates; one writer is enough
        return metrics
    (run.path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    systems = result.systems
    scores = {n: s.example_scores() for n, s in systems.items()}
    correct = {n: s.example_correct() for n, s in systems.items()}
    with (run.path / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for i, r in enumerate(data.test):
            row = {"input": r.input_text, "reference": r.answer,
                   "outputs": {n: s.outputs[i] for n, s in systems.items()},
                   "predictions": {n: s.predictions[i] for n, s in systems.items()},
                   "correct": {n: correct[n][i] for n in systems},
                   "score": {n: scores[n][i] for n in systems}}
            if r.references and len(r.references) > 1:
                row["references"] = r.references
            slots = {n: {"missing": s.examples["slot_missing"][i], "added": s.examples["slot_added"][i]}
                     for n, s in systems.items() if "slot_missing" in s.examples}
            if slots:
                row["slot_errors"] = slots
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return metrics


def stage_train(cfg: RunConfig, run: RunFolder, data: PreparedData, base: ResolvedModel, model=None,
                resume: bool = False, force: bool = False) -> TrainResult:
    with run.stage("train"):
        result = train(cfg, data, base, model, resume=resume, force=force)
        if is_main_process():
            (run.path / "train_result.json").write_text(json.dumps(result.to_json(), indent=2))
            run.manifest["train"] = {**reproducibility(cfg), "method": cfg.train.method,
                                     "global_batch": result.global_batch, "fsdp": result.fsdp,
                                     "resumed_from": result.resumed_from, "packing": result.packing,
                                     "attn_implementation": result.attn_implementation,
                                     "best_checkpoint": result.best_checkpoint, "estimate": result.estimate}
    return result


def run(cfg: RunConfig) -> dict:
    """Run every stage; returns metrics.json's content. The report lands in `<run>/report.html`.

    Under torchrun every rank runs the baselines (no rank waits long at a barrier) and trains; then rank 0
    alone evaluates and reports, and the other ranks return an empty dict."""
    bind_device()
    folder = RunFolder(cfg)
    data = stage_data(cfg, folder)
    base = stage_model(cfg, folder)
    model = load_model(base.path)
    with folder.stage("baselines"):
        baselines = run_baselines(cfg, data, base, model)
    trained = stage_train(cfg, folder, data, base, model)
    if not is_main_process():
        return {}
    with folder.stage("evaluate"):
        result = evaluate(cfg, data, base, trained.weights_dir, baselines, trained.model)
        metrics = write_results(folder, data, result)
    with folder.stage("report"):
        write_report(folder.path, cfg.eval.review_examples)
        if cfg.eval.review_examples:
            export_review(folder.path, cfg.eval.review_examples)
    return metrics
