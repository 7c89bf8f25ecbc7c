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


HEADLINE = {"classification": [("accuracy", "accuracy"), ("macro_f1", "macro-F1")],
            "generation": [("rouge_l", "ROUGE-L"), ("bleu", "BLEU")]}


def print_results(cfg: RunConfig, metrics: dict) -> None:
    from tunewise.report import system_title

    table = Table(title=f"{cfg.name}: held-out test split ({cfg.task.type})")
    table.add_column("system")
    cols = HEADLINE[cfg.task.type]
    for _, title in cols:
        table.add_column(title, justify="right")
    table.add_column("prompt tokens / request", justify="right")
    for name, values in metrics["test"].items():
        inf = metrics.get("inference", {}).get(name, {})
        table.add_row(system_title(name, inf), *[f"{values[k]:.3f}" for k, _ in cols],
                      f"{inf.get('prompt_tokens_per_request', 0):.0f}")
    console.print(table)


def _run(cfg: RunConfig) -> None:
    from tunewise.pipeline import run

    metrics = run(cfg)
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
def train_cmd(config: Path = typer.Argument(..., help="YAML run config")) -> None:
    """Prepare the data and train the adapter (no baselines, no evaluation)."""
    from tunewise.pipeline import RunFolder, stage_data, stage_model, stage_train

    cfg = load_config(config)
    run = RunFolder(cfg)
    result = stage_train(cfg, run, stage_data(cfg, run), stage_model(cfg, run))
    console.print(f"adapter: {result.adapter_dir}  ({result.examples} examples, {result.seconds:.0f} s)")


@app.command("eval")
@friendly_errors
def eval_cmd(config: Path = typer.Argument(..., help="YAML run config"),
             adapter: Path | None = typer.Option(None, help="adapter folder (default: runs/<name>/adapter)")) -> None:
    """Score the baselines and the fine-tuned adapter on the held-out test split."""
    from tunewise.errors import ConfigError
    from tunewise.evaluate import evaluate_fine_tuned, run_baselines
    from tunewise.models import load_model
    from tunewise.pipeline import RunFolder, stage_data, stage_model, write_results

    cfg = load_config(config)
    run = RunFolder(cfg)
    adapter = adapter or run.path / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter}: no PEFT adapter here (train first: tunewise train {config})")
    data, base = stage_data(cfg, run), stage_model(cfg, run)
    with run.stage("evaluate"):
        systems = run_baselines(cfg, data, base, load_model(base.path))
        systems["fine_tuned"] = evaluate_fine_tuned(cfg, data, base, adapter)
        metrics = write_results(run, data, systems)
    print_results(cfg, metrics)


@app.command("report")
@friendly_errors
def report_cmd(run_dir: Path = typer.Argument(..., help="a run folder, e.g. runs/demo")) -> None:
    """(Re)build report.html from a run folder."""
    from tunewise.errors import ConfigError
    from tunewise.report import write_report

    if not (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir}: no metrics.json (run `tunewise eval` first)")
    console.print(f"report: {write_report(run_dir)}")


@data_app.command("check")
@friendly_errors
def data_check(config: Path = typer.Argument(..., help="YAML run config")) -> None:
    """Load, validate and split the data; write runs/<name>/data/ and print a summary."""
    from tunewise.pipeline import RunFolder, stage_data

    cfg = load_config(config)
    data = stage_data(cfg, RunFolder(cfg))
    console.print_json(json.dumps(data.summary()))
    if data.rejected:
        console.print(f"[yellow]{len(data.rejected)} rows quarantined[/] → {cfg.run_dir / 'data/quarantine.jsonl'}")


# The operate commands register themselves on `app` (registry, keys, serve, feedback, monitor, retrain, export).
from tunewise import cli_operate  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(app())
