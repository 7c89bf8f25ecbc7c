"""Soup stage (after train): average several fine-tuned models of one recipe into one model of the same size.
It borrows evaluate's scorer for the validation split; evaluate then scores the soup on the test split.
Entry point: `make_soup(cfg, data, base, ingredients, out, greedy) -> SoupResult`.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time": the uniform soup is the plain mean; the greedy soup sorts the ingredients by
validation score and adds them one by one, keeping each only if the soup's validation score does not drop.
Selection uses the validation split only, scored exactly as the evaluator scores a fine-tuned model (label
scoring or generation per `eval.classification_mode`; the task's first headline metric), so the test split
stays untouched until `tunewise eval`."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import RunConfig
from tunewise.data import PreparedData
from tunewise.data.prompt import fine_tuned_labels
from tunewise.errors import ConfigError
from tunewise.evaluate.results import HEADLINE
from tunewise.evaluate.systems import score_llm
from tunewise.export import merge_adapter
from tunewise.models import ResolvedModel, load_model, load_tokenizer
from tunewise.soup.weights import check_compatible, is_adapter, resolve_ingredient, write_soup

__all__ = ["Ingredient", "SoupResult", "make_soup"]


@dataclass
class Ingredient:
    path: str  # as given on the command line
    weights: str  # the model or adapter folder it resolved to
    kind: str  # "model" | "adapter" (merged onto the base before averaging)
    val_score: float | None = None
    kept: bool = False
    soup_val_score: float | None = None  # greedy: the soup's score with this one added (None for the first)
    held_out_rows_trained: int | None = None  # its training rows found in this config's val/test (None: unknown)


@dataclass
class SoupResult:
    out: Path
    method: str  # "uniform" | "greedy"
    metric: str
    ingredients: list[Ingredient]
    val_score: float | None
    val_examples: int
    seconds: float
    kept: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "out": str(self.out)}


def make_soup(cfg: RunConfig, data: PreparedData, base: ResolvedModel, ingredients: list[Path], out: Path,
              greedy: bool = False, force: bool = False) -> SoupResult:
    """Average `ingredients` (model, adapter or run folders of one base) into the model folder `out`, with
    `out/soup.json` recording every ingredient's and candidate's validation score."""
    start = time.perf_counter()
    if greedy and not data.val:
        raise ConfigError("greedy soup: the validation split is empty (set data.split.val)")
    folders = [resolve_ingredient(Path(p)) for p in ingredients]
    if not folders:
        raise ConfigError("soup: give at least one ingredient")
    _check_out(out, folders, force)
    metric = HEADLINE[cfg.task.type][0]
    items = [Ingredient(str(p), str(f), "adapter" if is_adapter(f) else "model",
                        held_out_rows_trained=_held_out_rows_trained(p, f, data))
             for p, f in zip(ingredients, folders)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as tmp:
        work = Path(tmp)
        models = [_merged(base, f, work / f"merged-{i}") if is_adapter(f) else f for i, f in enumerate(folders)]
        check_compatible(models)  # before any scoring: a mismatch fails in seconds, not after N evaluations
        scorer = _ValScorer(cfg, data, base, metric)
        for i, (item, folder) in enumerate(zip(items, models)):
            item.val_score = scorer(folder, f"val: ingredient {i + 1}")
        kept, score = _greedy(items, models, scorer, work) if greedy else (list(range(len(items))), None)
        partial = work / "soup"
        write_soup([models[i] for i in kept], partial)
        if not greedy:
            score = scorer(partial, "val: soup")
        for i in kept:
            items[i].kept = True
        result = SoupResult(out, "greedy" if greedy else "uniform", metric, items, score, len(data.val),
                            round(time.perf_counter() - start, 2), [items[i].path for i in kept])
        (partial / "soup.json").write_text(json.dumps(result.to_json(), indent=2))
        if out.exists():
            shutil.rmtree(out)  # _check_out allowed it: empty, or --force
        partial.rename(out)
    return result


def _greedy(items: list[Ingredient], models: list[Path], scorer, work: Path) -> tuple[list[int], float]:
    """Wortsman's greedy soup: best ingredient first, then each next-best kept iff the soup's val score
    does not go down. Returns the kept indices in the order added and the soup's val score."""
    order = sorted(range(len(items)), key=lambda i: -items[i].val_score)  # stable: ties keep the given order
    kept, best = [order[0]], items[order[0]].val_score
    for i in order[1:]:
        candidate = work / f"candidate-{i}"
        write_soup([models[k] for k in [*kept, i]], candidate)
        items[i].soup_val_score = scorer(candidate, f"val: soup + ingredient {i + 1}")
        shutil.rmtree(candidate)
        if items[i].soup_val_score >= best:
            kept.append(i)
            best = items[i].soup_val_score
    return kept, best


class _ValScorer:
    """The evaluator's scorer for a fine-tuned model (`score_llm` with `fine_tuned_labels`), pointed at the
    validation split: the test split is swapped out of the data it is given."""

    def __init__(self, cfg: RunConfig, data: PreparedData, base: ResolvedModel, metric: str):
        self.cfg, self.metric = cfg, metric
        self.val = dataclasses.replace(data, test=list(data.val))
        self.tokenizer = load_tokenizer(base.path)  # as evaluate.score_model: the base's tokenizer

    def __call__(self, folder: Path, name: str) -> float | None:
        import torch  # heavy

        if not self.val.test:
            return None
        model = load_model(folder)
        result = score_llm(name, self.cfg, self.val, model, self.tokenizer,
                           prompt_labels=fine_tuned_labels(self.cfg.task, self.val.labels))
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return float(result.metrics[self.metric])


def _merged(base: ResolvedModel, adapter: Path, out: Path) -> Path:
    # A LoRA update is B @ A: the mean of merged updates is mean(B_i @ A_i), which is not mean(B_i) @
    # mean(A_i), so averaging the A and B matrices separately would be wrong. Each adapter is merged first.

    try:
        merge_adapter(base.path, adapter, out)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ConfigError(f"{adapter}: cannot be merged onto the base {base.model_id} "
                          f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    return out


def _check_out(out: Path, folders: list[Path], force: bool) -> None:
    target = out.resolve()
    for folder in folders:
        if target == folder.resolve() or target in folder.resolve().parents:
            raise ConfigError(f"soup: --out {out} would overwrite the ingredient {folder}")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"soup: {out} exists and is not empty (choose another --out, or --force to replace it)")


def _key(messages: list[dict]) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def _held_out_rows_trained(given: Path, folder: Path, data: PreparedData) -> int | None:
    """How many rows of this config's val and test splits the ingredient's run trained on (rows this
    config's own training split also holds do not count). A run with a different `seed` carves a different
    validation split unless `data.split.seed` is pinned; such an ingredient has seen the rows greedy
    selection scores on, and maybe the test rows. None where no run folder records the training rows."""
    train_file = folder.parent / "data" / "train.jsonl"
    if not train_file.is_file():
        return None
    held = {_key(r.messages) for r in [*data.val, *data.test]} - {_key(r.messages) for r in data.train}
    with train_file.open(encoding="utf-8") as fh:
        n = sum(_key(json.loads(line)["messages"]) in held for line in fh if line.strip())
    if n:
        raise ConfigError(f"{given}: its run trained on {n} rows of this config's validation or test split (its "
                          "data split differs: train every ingredient with the same data.split.seed, e.g. "
                          "--set data.split.seed=42, and give the soup that split too)")
    return n
