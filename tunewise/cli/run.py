"""The lifecycle commands: run, demo, init, train, accelerate-config, estimate, tune, eval, report."""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import typer
from rich.table import Table

from tunewise.cli.common import console, err_console
from tunewise.config import RunConfig, load_config, parse_overrides
from tunewise.errors import ConfigError

CONFIG = typer.Argument(..., help="YAML run config")


def _with_ci(metrics: dict, system: str, metric: str) -> str:
    value = metrics["test"][system].get(metric)
    if value is None:
        return "–"
    lo, hi = metrics.get("ci", {}).get(system, {}).get(metric, (None, None))
    return f"{value:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def print_results(cfg: RunConfig, metrics: dict) -> None:
    """The results table (headline metrics with 95 % CIs, prompt size and cost per system) and the verdict."""
    from tunewise.report import HEADLINE, system_title  # heavy

    table = Table(title=f"{cfg.name}: held-out test split ({cfg.task.type}; [95 % bootstrap CI])")
    table.add_column("system")
    cols = HEADLINE[cfg.task.type]
    for name in cols:
        table.add_column(name, justify="right")
    table.add_column("prompt tokens / request", justify="right")
    table.add_column("$ / 1k requests", justify="right")
    for name in metrics["test"]:
        inf = metrics.get("inference", {}).get(name, {})
        dollars = inf.get("dollars_per_1k_requests")
        table.add_row(system_title(name, inf), *[_with_ci(metrics, name, m) for m in cols],
                      f"{inf.get('prompt_tokens_per_request', 0):.0f}",
                      "–" if dollars is None else f"{dollars:.3g}")
    console.print(table)
    verdict = metrics.get("verdict")
    if verdict:
        style = "bold green" if verdict["ship"] else "bold red"
        console.print(f"[{style}]{'SHIP' if verdict['ship'] else 'DO NOT SHIP'}[/] {verdict['text']}",
                      highlight=False)


def _run(cfg: RunConfig) -> None:
    from tunewise.pipeline import run  # heavy
    from tunewise.train.distributed import is_main_process

    metrics = run(cfg)
    if not is_main_process():  # torchrun: rank 0 evaluated and prints
        return
    print_results(cfg, metrics)
    console.print(f"report: {cfg.run_dir / 'report.html'}")


def run_cmd(config: Path = CONFIG,
            set_: list[str] = typer.Option([], "--set", help="override a key: --set train.epochs=3")) -> None:
    """Run every stage: data → baselines → train → evaluate → report."""
    _run(load_config(config, parse_overrides(set_)))


def demo(output_dir: Path = typer.Option(Path("runs"), help="where runs/<name> goes")) -> None:
    """Run the shipped demo: BBC News topics with the embedded SmolLM2-135M-Instruct."""
    path = importlib.resources.files("tunewise") / "configs" / "demo.yaml"
    _run(load_config(Path(str(path)), {"output_dir": str(output_dir)}))


def init(path: Path = typer.Argument(Path("tunewise.yaml"), help="where to write the example config"),
         force: bool = typer.Option(False, help="overwrite an existing file")) -> None:
    """Write a commented example config."""
    if path.exists() and not force:
        err_console.print(f"[bold red]error:[/] {path} exists (use --force to overwrite)")
        raise typer.Exit(2)
    src = importlib.resources.files("tunewise") / "configs" / "example.yaml"
    shutil.copyfile(str(src), path)
    console.print(f"wrote {path}; edit data.paths, then: tunewise run {path}")


def train_cmd(config: Path = CONFIG,
              resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint"),
              force: bool = typer.Option(False, "--force", help="train even if the memory estimate does not fit"),
              set_: list[str] = typer.Option([], "--set", help="override a key: --set train.fsdp=true")
              ) -> None:
    """Prepare the data and train (no baselines, no evaluation). Works under torchrun / accelerate launch."""
    from tunewise.pipeline import RunFolder, stage_data, stage_model, stage_train  # heavy
    from tunewise.train.distributed import is_main_process

    cfg = load_config(config, parse_overrides(set_))
    run = RunFolder(cfg)
    result = stage_train(cfg, run, stage_data(cfg, run), stage_model(cfg, run), resume=resume, force=force)
    if is_main_process():
        est = result.estimate
        console.print(f"{cfg.train.method}: {result.weights_dir}  ({result.examples} examples, "
                      f"{result.seconds:.0f} s, {result.tokens_per_second:,.0f} tokens/s on {result.world_size} "
                      f"device(s), global batch {result.global_batch}; estimated peak "
                      f"{est['peak_memory_gib']:.2f} GiB per device)")


def accelerate_config_cmd(kind: str = typer.Argument(..., help="ddp | fsdp")) -> None:
    """Print the path of a shipped accelerate config: accelerate launch --config_file "$(tunewise
    accelerate-config fsdp)" -m tunewise.cli train CONFIG."""
    path = importlib.resources.files("tunewise") / "configs" / "accelerate" / f"{kind}.yaml"
    if kind not in ("ddp", "fsdp") or not path.is_file():
        raise ConfigError(f"accelerate-config {kind}: expected ddp or fsdp")
    print(path)


def estimate_cmd(config: Path = CONFIG,
                 as_json: bool = typer.Option(False, "--json", help="print peak_memory_gib, hours, cost_usd, "
                                                                    "trainable_params as JSON")) -> None:
    """Parameters, peak memory, time and cost of training, from config.json alone (no weights loaded)."""
    from tunewise.train.plan import estimate_config  # heavy

    cfg = load_config(config)
    est = estimate_config(cfg)
    if as_json:
        print(json.dumps(est.short_json()))
        return
    table = Table(title=f"{cfg.name}: {cfg.train.method} on {est.device} x{cfg.estimate.gpus}")
    table.add_column("")
    table.add_column("estimate", justify="right")
    rows = [("parameters", f"{est.total_params:,}"), ("trainable parameters", f"{est.trainable_params:,}"),
            ("weights", f"{est.weights_gib:.2f} GiB"), ("gradients", f"{est.grads_gib:.2f} GiB"),
            ("optimizer state", f"{est.optimizer_gib:.2f} GiB"), ("activations", f"{est.activations_gib:.2f} GiB"),
            ("peak memory / device", f"{est.peak_memory_gib:.2f} GiB"),
            ("device memory", f"{est.device_memory_gib:.1f} GiB" if est.device_memory_gib else "system RAM"),
            ("tokens / epoch", f"{est.tokens_per_epoch:,}"), ("time / epoch", f"{est.seconds_per_epoch / 60:.1f} min"),
            ("total time", f"{est.hours:.2f} h"), ("cost", f"${est.cost_usd:.2f}")]
    plan = est.fast_plan
    if plan:  # the fast path's automatic plan (tunewise.train.fast.auto_plan)
        rows += [("fast path plan", f"micro-batch {plan['micro_batch_size']} of {plan['batch_size']}, "
                                    f"{plan['checkpointed_layers']}/{plan['layers']} layers checkpointed, "
                                    f"{plan.get('offloaded_layers', 0)} offloaded to host memory, recipes "
                                    f"{'on' if plan['recompute_elementwise'] else 'off'}"),
                 ("fast path peak memory", f"{plan['peak_gib']:.2f} GiB"),
                 ("fast path speed", f"~{plan['speedup']:.2f}x plain, {plan['hours']:.2f} h in total")]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if not est.fits:
        console.print("[yellow]does not fit on this device[/]: try a smaller batch, gradient checkpointing or QLoRA")


def tune_cmd(config: Path = typer.Argument(..., help="YAML run config with a tune: section")) -> None:
    """Hyperparameter search (Optuna, pruning, SQLite); writes the best trial's config."""
    from tunewise.pipeline import RunFolder, stage_data, stage_model  # heavy
    from tunewise.train.tune import tune

    cfg = load_config(config)
    run = RunFolder(cfg)
    result = tune(cfg, stage_data(cfg, run), stage_model(cfg, run))
    console.print(f"best {cfg.tune.metric} = {result.best_value:.4f} with {result.best_params} "
                  f"({result.trials} trials, {result.pruned} pruned)")
    console.print(f"best config: {result.best_config}  (study: {result.storage})")


def eval_cmd(config: Path = CONFIG,
             adapter: Path | None = typer.Option(None, help="adapter or full-model folder (default: "
                                                 "runs/<name>/adapter, else runs/<name>/model)"),
             review: int = typer.Option(0, "--review", min=0, help="also export N side-by-side test examples "
                                        "(review.csv, review.html), wrong answers first"),
             set_: list[str] = typer.Option([], "--set", help="override a key: --set name=banking77-soup")
             ) -> None:
    """Score the baselines and the fine-tuned adapter on the held-out test split; write metrics and report."""
    from tunewise.evaluate import evaluate, load_fine_tuned, run_baselines  # heavy
    from tunewise.models import load_model
    from tunewise.models.adapters import has_adapter
    from tunewise.pipeline import RunFolder, stage_data, stage_model, write_results
    from tunewise.report import export_review, write_report

    cfg = load_config(config, parse_overrides(set_))
    run = RunFolder(cfg)
    adapter = adapter or next((p for p in (run.path / "adapter", run.path / "model") if p.is_dir()),
                              run.path / "adapter")
    if not ((adapter / "adapter_config.json").is_file() or (adapter / "config.json").is_file()):
        raise ConfigError(f"{adapter}: no PEFT adapter or fine-tuned model here (train first: tunewise train "
                          f"{config})")
    data, base = stage_data(cfg, run), stage_model(cfg, run)
    with run.stage("evaluate"):
        model = load_model(base.path)
        baselines = run_baselines(cfg, data, base, model)
        # Baselines are done with the bare model: an adapter goes on that same copy, not a second one.
        tuned = load_fine_tuned(base, adapter, model)
        result = evaluate(cfg, data, base, adapter, baselines, tuned,
                          None if has_adapter(tuned) else model)
        metrics = write_results(run, data, result)
    print_results(cfg, metrics)
    console.print(f"report: {write_report(run.path, cfg.eval.review_examples)}")
    if review:
        csv_path, html_path = export_review(run.path, review)
        console.print(f"review: {csv_path}  {html_path}")


def report_cmd(run_dir: Path = typer.Argument(..., help="a run folder, e.g. runs/demo"),
               n: int = typer.Option(10, "--samples", min=0, help="review examples shown in the report"),
               review: int = typer.Option(0, "--review", min=0, help="also export N examples as CSV and HTML")
               ) -> None:
    """(Re)build report.html from a run folder (no model needed)."""
    from tunewise.report import export_review, write_report  # heavy

    if not (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir}: no metrics.json (run `tunewise eval` first)")
    console.print(f"report: {write_report(run_dir, n)}")
    if review:
        csv_path, html_path = export_review(run_dir, review)
        console.print(f"review: {csv_path}  {html_path}")
