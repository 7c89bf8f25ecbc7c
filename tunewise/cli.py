"""The `tunewise` command: a thin shell over the stage functions. Errors become one line and an exit code."""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import shutil
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunewise.config import RunConfig, load_config, parse_overrides
from tunewise.errors import TunewiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune LLMs the disciplined way.")
data_app = typer.Typer(no_args_is_help=True, help="Check and prepare datasets.")
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)
DEBUG = {"on": bool(os.environ.get("TUNEWISE_DEBUG"))}


def friendly_errors(fn):
    """TunewiseError → one red line and its exit code (2 usage, 1 data/model); traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TunewiseError as err:
            if DEBUG["on"]:
                raise
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks")) -> None:
    DEBUG["on"] = DEBUG["on"] or debug
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tunewise never downloads from a hub


def _with_ci(metrics: dict, system: str, metric: str) -> str:
    value = metrics["test"][system].get(metric)
    if value is None:
        return "–"
    lo, hi = metrics.get("ci", {}).get(system, {}).get(metric, (None, None))
    return f"{value:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def print_results(cfg: RunConfig, metrics: dict) -> None:
    """The results table (headline metrics with 95 % CIs, prompt size and cost per system) and the verdict."""
    from tunewise.report import HEADLINE, system_title

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
    from tunewise.pipeline import run
    from tunewise.train.distributed import is_main_process

    metrics = run(cfg)
    if not is_main_process():  # torchrun: rank 0 evaluated and prints
        return
    print_results(cfg, metrics)
    console.print(f"report: {cfg.run_dir / 'report.html'}")


@app.command("run")
@friendly_errors
def run_cmd(config: Path = typer.Argument(..., help="YAML run config"),
            set_: list[str] = typer.Option([], "--set", help="override a key: --set train.epochs=3")) -> None:
    """Run every stage: data → baselines → train → evaluate → report."""
    _run(load_config(config, parse_overrides(set_)))


@app.command()
@friendly_errors
def demo(output_dir: Path = typer.Option(Path("runs"), help="where runs/<name> goes")) -> None:
    """Run the shipped demo: BBC News topics with the embedded SmolLM2-135M-Instruct."""
    path = importlib.resources.files("tunewise") / "configs" / "demo.yaml"
    _run(load_config(Path(str(path)), {"output_dir": str(output_dir)}))


@app.command()
@friendly_errors
def init(path: Path = typer.Argument(Path("tunewise.yaml"), help="where to write the example config"),
         force: bool = typer.Option(False, help="overwrite an existing file")) -> None:
    """Write a commented example config."""
    if path.exists() and not force:
        err_console.print(f"[bold red]error:[/] {path} exists (use --force to overwrite)")
        raise typer.Exit(2)
    src = importlib.resources.files("tunewise") / "configs" / "example.yaml"
    shutil.copyfile(str(src), path)
    console.print(f"wrote {path}; edit data.paths, then: tunewise run {path}")


@app.command("train")
@friendly_errors
def train_cmd(config: Path = typer.Argument(..., help="YAML run config"),
              resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint"),
              force: bool = typer.Option(False, "--force", help="train even if the memory estimate does not fit"),
              set_: list[str] = typer.Option([], "--set", help="override a key: --set train.fsdp=true")
              ) -> None:
    """Prepare the data and train (no baselines, no evaluation). Works under torchrun / accelerate launch."""
    from tunewise.pipeline import RunFolder, stage_data, stage_model, stage_train
    from tunewise.train.distributed import is_main_process

    cfg = load_config(config, parse_overrides(set_))
    run = RunFolder(cfg)
    result = stage_train(cfg, run, stage_data(cfg, run), stage_model(cfg, run), resume=resume, force=force)
    if is_main_process():
        est = result.estimate
        console.print(f"{cfg.train.method}: {result.adapter_dir}  ({result.examples} examples, "
                      f"{result.seconds:.0f} s, {result.tokens_per_second:,.0f} tokens/s on {result.world_size} "
                      f"device(s), global batch {result.global_batch}; estimated peak "
                      f"{est['peak_memory_gib']:.2f} GiB per device)")


@app.command("accelerate-config")
@friendly_errors
def accelerate_config_cmd(kind: str = typer.Argument(..., help="ddp | fsdp")) -> None:
    """Print the path of a shipped accelerate config: accelerate launch --config_file "$(tunewise
    accelerate-config fsdp)" -m tunewise.cli train CONFIG."""
    from tunewise.errors import ConfigError

    path = importlib.resources.files("tunewise") / "configs" / "accelerate" / f"{kind}.yaml"
    if kind not in ("ddp", "fsdp") or not path.is_file():
        raise ConfigError(f"accelerate-config {kind}: expected ddp or fsdp")
    print(path)


@app.command("estimate")
@friendly_errors
def estimate_cmd(config: Path = typer.Argument(..., help="YAML run config"),
                 as_json: bool = typer.Option(False, "--json", help="print peak_memory_gib, hours, cost_usd, "
                                                                    "trainable_params as JSON")) -> None:
    """Parameters, peak memory, time and cost of training, from config.json alone (no weights loaded)."""
    from tunewise.train.plan import estimate_config

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
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if not est.fits:
        console.print("[yellow]does not fit on this device[/]: try a smaller batch, gradient checkpointing or QLoRA")


@app.command("tune")
@friendly_errors
def tune_cmd(config: Path = typer.Argument(..., help="YAML run config with a tune: section")) -> None:
    """Hyperparameter search (Optuna, pruning, SQLite); writes the best trial's config."""
    from tunewise.pipeline import RunFolder, stage_data, stage_model
    from tunewise.train.tune import tune

    cfg = load_config(config)
    run = RunFolder(cfg)
    result = tune(cfg, stage_data(cfg, run), stage_model(cfg, run))
    console.print(f"best {cfg.tune.metric} = {result.best_value:.4f} with {result.best_params} "
                  f"({result.trials} trials, {result.pruned} pruned)")
    console.print(f"best config: {result.best_config}  (study: {result.storage})")


@app.command("eval")
@friendly_errors
def eval_cmd(config: Path = typer.Argument(..., help="YAML run config"),
             adapter: Path | None = typer.Option(None, help="adapter or full-model folder (default: "
                                                 "runs/<name>/adapter, else runs/<name>/model)"),
             review: int = typer.Option(0, "--review", min=0, help="also export N side-by-side test examples "
                                        "(review.csv, review.html), wrong answers first"),
             set_: list[str] = typer.Option([], "--set", help="override a key: --set name=banking77-soup")
             ) -> None:
    """Score the baselines and the fine-tuned adapter on the held-out test split; write metrics and report."""
    from tunewise.errors import ConfigError
    from tunewise.evaluate import evaluate, load_fine_tuned, run_baselines
    from tunewise.models import load_model
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
                          None if hasattr(tuned, "disable_adapter") else model)
        metrics = write_results(run, data, result)
    print_results(cfg, metrics)
    console.print(f"report: {write_report(run.path, cfg.eval.review_examples)}")
    if review:
        csv_path, html_path = export_review(run.path, review)
        console.print(f"review: {csv_path}  {html_path}")


@app.command("report")
@friendly_errors
def report_cmd(run_dir: Path = typer.Argument(..., help="a run folder, e.g. runs/demo"),
               n: int = typer.Option(10, "--samples", min=0, help="review examples shown in the report"),
               review: int = typer.Option(0, "--review", min=0, help="also export N examples as CSV and HTML")
               ) -> None:
    """(Re)build report.html from a run folder (no model needed)."""
    from tunewise.errors import ConfigError
    from tunewise.report import export_review, write_report

    if not (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir}: no metrics.json (run `tunewise eval` first)")
    console.print(f"report: {write_report(run_dir, n)}")
    if review:
        csv_path, html_path = export_review(run_dir, review)
        console.print(f"review: {csv_path}  {html_path}")


PATHS = typer.Argument(..., help="data files (JSONL, JSON, CSV/TSV, Parquet), or one YAML run config")
OUT = typer.Option(Path("data-check"), "--out", help="folder for card.json, card.html, quarantine.jsonl")
TASK = typer.Option(None, "--task", help="classification | generation (default: classification)")
MODEL = typer.Option(None, "--model", help="model whose tokenizer measures lengths (default: the config's)")
FORMAT = typer.Option(None, "--format", help="auto|chat|alpaca|prompt_completion|sharegpt|text_label")
PII = typer.Option(None, "--pii", help="report | redact | drop (default redact)")
LABELS = typer.Option(None, "--labels", help="declared label set, comma-separated (others are quarantined)")
TEXT_FIELD = typer.Option(None, "--text-field", help="column holding the text")
LABEL_FIELD = typer.Option(None, "--label-field", help="column holding the label")
SLICES = typer.Option(None, "--slice", help="metadata column to audit the label mix within (repeatable)")
THRESHOLD = typer.Option(None, "--dedup-threshold", help="Jaccard similarity of near duplicates (0.8)")
STRICT = typer.Option(False, "--strict", help="exit 1 when any row is quarantined")


def data_config(paths: list[Path], **opts) -> RunConfig:
    """A run config from a YAML file (a single .yaml path) or from data files plus the command's options."""
    from tunewise.config import parse_config

    if len(paths) == 1 and paths[0].suffix in (".yaml", ".yml"):
        raw = load_config(paths[0]).model_dump(mode="json")
    else:
        raw = {"data": {"paths": [str(p) for p in paths]}}
    data, task = raw.setdefault("data", {}), raw.setdefault("task", {})
    for key in ("format", "pii", "text_field", "label_field"):
        if opts.get(key) is not None:
            data[key] = opts[key]
    if opts.get("slices"):
        data["slice_columns"] = opts["slices"]
    if opts.get("threshold") is not None:
        data.setdefault("dedup", {})["threshold"] = opts["threshold"]
    if opts.get("task"):
        task["type"] = opts["task"]
    if opts.get("labels"):
        task["labels"] = [x.strip() for x in opts["labels"].split(",") if x.strip()]
    if opts.get("model"):
        raw.setdefault("model", {})["base"] = opts["model"]
    return parse_config(raw, "command line")


def print_card(card, out: Path) -> None:
    c = card.counts
    console.print(f"[bold]{c['rows_read']}[/] rows read · [bold]{c['usable']}[/] usable · "
                  f"{c['quarantined']} quarantined · {c['duplicates_removed']} duplicates removed · "
                  f"hash {card.content_hash[:12]}")
    table = Table(title="quarantine reasons", show_header=False) if card.quarantine["by_reason"] else None
    for reason, n in (card.quarantine["by_reason"] or {}).items():
        table.add_row(reason, str(n))
    if table:
        console.print(table)
    if card.pii["occurrences"]:
        found = ", ".join(f"{k} {n}" for k, n in card.pii["occurrences"].items())
        console.print(f"PII ({card.pii['policy']}): {found}")
    for w in card.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"card: {out / 'card.html'}  ·  quarantine: {out / 'quarantine.jsonl'}")


def _strict_exit(card, strict: bool) -> None:
    if strict and card.counts["quarantined"]:
        err_console.print(f"[bold red]error:[/] --strict: {card.counts['quarantined']} rows quarantined")
        raise typer.Exit(1)


@data_app.command("check")
@friendly_errors
def data_check(paths: list[Path] = PATHS, out: Path = OUT, task: str = TASK, model: str = MODEL,
               format: str = FORMAT, pii: str = PII, labels: str = LABELS, text_field: str = TEXT_FIELD,
               label_field: str = LABEL_FIELD, slices: list[str] = SLICES, threshold: float = THRESHOLD,
               strict: bool = STRICT) -> None:
    """Read, validate and audit the data; write the card and the quarantine. Exit 1 when no usable row."""
    from tunewise.data import check

    cfg = data_config(paths, task=task, model=model, format=format, pii=pii, labels=labels, slices=slices,
                      text_field=text_field, label_field=label_field, threshold=threshold)
    card = check(cfg, out)
    print_card(card, out)
    _strict_exit(card, strict)


@data_app.command("clean")
@friendly_errors
def data_clean(paths: list[Path] = PATHS, out: Path = OUT, task: str = TASK, model: str = MODEL,
               format: str = FORMAT, pii: str = PII, labels: str = LABELS, text_field: str = TEXT_FIELD,
               label_field: str = LABEL_FIELD, slices: list[str] = SLICES, threshold: float = THRESHOLD,
               strict: bool = STRICT) -> None:
    """Check, then write the cleaned, deduplicated, redacted rows as canonical JSONL (out/clean.jsonl)."""
    from tunewise.data import check

    cfg = data_config(paths, task=task, model=model, format=format, pii=pii, labels=labels, slices=slices,
                      text_field=text_field, label_field=label_field, threshold=threshold)
    card = check(cfg, out, out / "clean.jsonl")
    print_card(card, out)
    _strict_exit(card, strict)
    console.print(f"clean data: {out / 'clean.jsonl'} ({card.counts['usable']} rows)")
    _strict_exit(card, strict)


@data_app.command("split")
@friendly_errors
def data_split(paths: list[Path] = PATHS, out: Path = OUT, task: str = TASK, model: str = MODEL,
               format: str = FORMAT, pii: str = PII, labels: str = LABELS, text_field: str = TEXT_FIELD,
               label_field: str = LABEL_FIELD, slices: list[str] = SLICES, threshold: float = THRESHOLD,
               group: str = typer.Option(None, "--group", help="column whose rows stay in one split"),
               val: float = typer.Option(None, "--val", help="fraction (<1) or count of validation rows (0.1)"),
               test: float = typer.Option(None, "--test", help="fraction (<1) or count of test rows (0.1)"),
               seed: int = typer.Option(None, "--seed"), strict: bool = STRICT) -> None:
    """Check and clean, then write train/val/test JSONL with a leakage report (out/leakage.json)."""
    from tunewise.config import parse_config
    from tunewise.data import prepare

    raw = data_config(paths, task=task, model=model, format=format, pii=pii, labels=labels, slices=slices,
                      text_field=text_field, label_field=label_field, threshold=threshold
                      ).model_dump(mode="json")
    if seed is not None:
        raw["seed"] = seed
    for key, value in (("val", val), ("test", test)):  # unset: the config's split, else the defaults
        if value is not None:
            raw["data"].setdefault("split", {})[key] = int(value) if value >= 1 else value
    if group:
        raw["data"]["group_column"] = group
    data = prepare(parse_config(raw, "command line"))
    data.write(out)
    print_card(data.card, out)
    lk = data.card.leakage
    console.print(f"train/val/test {len(data.train)}/{len(data.val)}/{len(data.test)} → {out} · leakage "
                  f"removed: val {lk['removed']['val']}, test {lk['removed']['test']} ({out / 'leakage.json'})")
    _strict_exit(data.card, strict)


# These register themselves on `app`: the operate commands (registry, keys, serve, feedback, monitor, retrain,
# export) and `soup`.
from tunewise import cli_operate, cli_soup  # noqa: E402, F401

if __name__ == "__main__":
    # `python -m tunewise.cli` runs this file as __main__, but cli_operate and cli_soup registered their
    # commands on the imported module's app (tunewise.cli.app): run that one, which has them all.
    from tunewise.cli import app as full_app

    sys.exit(full_app())
