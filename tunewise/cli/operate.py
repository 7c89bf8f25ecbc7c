"""The operate commands: registry, keys, serve, feedback, monitor, retrain, export. Each needs the registry extra
(`serve` and `keys` the serve extra too), so their stage imports stay inside the commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
import yaml
from rich.table import Table

from tunewise.cli.common import console
from tunewise.config import OperateConfig, load_operate_config
from tunewise.errors import ConfigError

CONFIG = typer.Option(None, "--config", "-c", help="YAML with registry/serve/monitor sections (or a run config)")


def _operate(config: Path | None) -> OperateConfig:
    return load_operate_config(config)


def _registry(config: Path | None):
    from tunewise.registry import open_registry  # extra

    return open_registry(_operate(config).registry)


def registry_register(run_dir: Path = typer.Argument(..., help="a finished run folder, e.g. runs/demo"),
                      name: str | None = typer.Option(None, help="model name (default: the run's name)"),
                      config: Path | None = CONFIG) -> None:
    """Record a run's dataset, config, metrics and adapter; the model becomes the candidate."""
    m = _registry(config).register_run(run_dir, name)
    console.print(f"registered {m.ref} (candidate); dataset {m.dataset_hash[:12]}, metrics {m.metrics}")


def registry_list(config: Path | None = CONFIG) -> None:
    """Every registered model, with its aliases."""
    reg = _registry(config)
    aliases = reg.aliases()
    table = Table(title="registered models")
    for col in ("id", "model", "base", "dataset", "metrics", "aliases", "registered"):
        table.add_column(col)
    for m in reg.models():
        tags = ", ".join(a for a, mid in aliases.items() if mid == m.id)
        metrics = " ".join(f"{k}={v:.3f}" for k, v in m.metrics.items() if isinstance(v, float))
        table.add_row(str(m.id), m.ref, m.base_model.get("id", "?"), m.dataset_hash[:12], metrics, tags,
                      f"{m.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


def registry_show(ref: str = typer.Argument("production", help="alias, name or name:vN"),
                  config: Path | None = CONFIG) -> None:
    """A model with its lineage: run, dataset version (and its parents), parent model, alias history."""
    reg = _registry(config)
    m = reg.model(ref)
    run = reg.run_record(m.run_id)
    chain, h = [], m.dataset_hash
    while h:
        ds = reg.dataset_record(h)
        chain.append({"content_hash": h, "source": ds["source"], "counts": ds["card"].get("counts")})
        h = ds["parent_hash"]
    events = [{k: (str(v) if k == "created_at" else v) for k, v in e.items() if k != "gate"} |
              {"gate": e["gate"]} for e in reg.events(200) if m.id in (e["model_id"], e["previous_model_id"])]
    console.print_json(json.dumps({
        "model": m.ref, "id": m.id, "kind": m.kind, "artifact": str(m.artifact_path), "base_model": m.base_model,
        "metrics": m.metrics, "test_set_hash": m.test_set_hash, "parent_model_id": m.parent_id,
        "run": {"id": run["id"], "name": run["name"], "path": run["path"]}, "dataset_lineage": chain,
        "alias_events": events}, default=str))


def registry_promote(ref: str = typer.Argument("candidate", help="alias, name or name:vN"),
                     force: bool = typer.Option(False, help="promote even if the gate says no (needs --reason)"),
                     reason: str | None = typer.Option(None, help="recorded with the promotion"),
                     config: Path | None = CONFIG) -> None:
    """Make a model production if it beats production on the frozen test set (paired bootstrap)."""
    change = _registry(config).promote(ref, force, reason)
    gate = change.gate.summary() if change.gate else "no production model to compare against"
    console.print(f"[green]promoted[/] {change.model.ref} to production "
                  f"(was {change.previous.ref if change.previous else 'none'}): {gate}"
                  + (" [yellow](forced)[/]" if force else ""))


def registry_rollback(reason: str | None = typer.Option(None, help="recorded with the rollback"),
                      config: Path | None = CONFIG) -> None:
    """Restore the previous production model."""
    change = _registry(config).rollback(reason)
    console.print(f"[green]rolled back[/]: production is {change.model.ref} again (was {change.previous.ref})")


def keys_create(name: str = typer.Argument(..., help="who the key is for"), config: Path | None = CONFIG) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from tunewise.serve.auth import create_key  # extra

    key = create_key(_registry(config).engine, name)
    console.print(f"API key for {name} (shown once, store it now):")
    console.print(key, highlight=False, soft_wrap=True)


def keys_list(config: Path | None = CONFIG) -> None:
    """API keys by name (never the keys themselves)."""
    from tunewise.serve.auth import list_keys  # extra

    for k in list_keys(_registry(config).engine):
        console.print(f"{k['id']:>4}  {k['name']:<30} {'revoked' if k['revoked'] else 'active'}  {k['created_at']}")


def keys_revoke(name: str = typer.Argument(...), config: Path | None = CONFIG) -> None:
    """Revoke every active key of `name`; the server refuses them from the next request on."""
    from tunewise.serve.auth import revoke_key  # extra

    console.print(f"revoked {revoke_key(_registry(config).engine, name)} key(s) of {name}")


def serve_cmd(config: Path | None = CONFIG,
              host: str | None = typer.Option(None, help="default: serve.host (127.0.0.1)"),
              port: int | None = typer.Option(None, help="default: serve.port (8000)"),
              no_auth: bool = typer.Option(False, "--no-auth", help="accept requests without an API key")) -> None:
    """OpenAI-compatible server for the production model and every registered adapter."""
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning, leaving the cores to the HTTP
    # threads and other processes (measured: docs/operate.md, "CPU threads"). Set the variable to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tunewise.serve import serve  # extra

    cfg = _operate(config)
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if no_auth:
        updates["auth"] = False
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update=updates)})
    serve(cfg)


def feedback_export(out: Path = typer.Argument(..., help="JSONL file for the dataset rows"),
                    model: str | None = typer.Option(None, help="only feedback on this model name"),
                    only_new: bool = typer.Option(False, help="skip feedback exported before"),
                    mark: bool = typer.Option(False, help="mark the exported feedback as exported"),
                    config: Path | None = CONFIG) -> None:
    """Turn user corrections into canonical dataset rows ({"messages", "label"})."""
    from tunewise.monitor.feedback import export_feedback  # extra

    res = export_feedback(_registry(config).engine, out, model, only_new, mark)
    console.print(f"{res.rows} correction rows → {res.path}")
    if res.unredacted:
        console.print(f"[yellow]{res.unredacted} rows were logged before PII redaction was available[/]")


def monitor_cmd(out: Path = typer.Option(Path("monitor"), help="folder for monitor.html and monitor.json"),
                config: Path | None = CONFIG) -> None:
    """Drift of recent traffic against the production model's training data; says if retraining is due."""
    from tunewise.monitor import monitor  # extra
    from tunewise.registry import open_registry

    cfg = _operate(config)
    res = monitor(cfg, open_registry(cfg.registry), out)
    table = Table(title=f"drift: {res.traffic} requests to {res.model} vs {res.reference} training examples")
    for col in ("check", "value", "threshold", "drift"):
        table.add_column(col)
    for c in res.checks:
        table.add_row(c.name, f"{c.value:.4f}", str(c.threshold), "[red]yes[/]" if c.drift else "no")
    console.print(table)
    console.print(("[bold red]" if res.retrain_recommended else "[green]") + res.verdict + "[/]")
    console.print(f"report: {res.report}")


def retrain_cmd(train_config: Path | None = typer.Option(
                    None, help="run config for the candidate (its data section is replaced); default: production's"),
                name: str | None = typer.Option(None, help="run name (default: <model>-retrain-v<N>)"),
                config: Path | None = CONFIG) -> None:
    """Production's data + feedback corrections → train a candidate → promote only if it is better."""
    from tunewise.retrain import retrain  # extra

    raw = None
    if train_config is not None:
        if not train_config.is_file():
            raise ConfigError(f"{train_config}: config file not found")
        raw = yaml.safe_load(train_config.read_text(encoding="utf-8"))
    res = retrain(_registry(config), raw, name)
    s = res.feedback_slice
    console.print(f"candidate {res.candidate.ref} (parent {res.production.ref}), {res.corrections} corrections"
                  + (f", {res.corrections_rejected} turned away (label not in the label set)"
                     if res.corrections_rejected else ""))
    console.print(f"feedback slice ({s.n}): candidate {s.candidate:.3f} vs production {s.production:.3f}")
    if res.test_gate:
        console.print(f"frozen test set: {res.test_gate.summary()}")
    console.print(f"[green]promoted to production[/]: {res.reason}" if res.promoted
                  else f"[yellow]not promoted[/]: {res.reason}")


def export_cmd(ref: str = typer.Argument("production", help="alias, name or name:vN"),
               out: Path = typer.Option(Path("export"), help="output folder"),
               gguf: bool = typer.Option(False, help="also write a GGUF file for llama.cpp / Ollama"),
               f16: bool = typer.Option(False, help="GGUF weights in F16 (default F32)"),
               config: Path | None = CONFIG) -> None:
    """Merge a registered adapter into its base model (safetensors) and optionally write GGUF."""
    from tunewise.export import export_model  # extra

    res = export_model(_registry(config), ref, out, gguf, f16)
    console.print(f"{res.model}: merged safetensors → {res.merged_dir}")
    if res.gguf_file:
        console.print(f"GGUF → {res.gguf_file}  (ollama: FROM ./{res.gguf_file.name} in a Modelfile)")
