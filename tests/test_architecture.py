"""The package's shape, checked from its source with `ast`: data flows forward through the stages, no module
imports another module's private names, and no modules import each other in a circle.

Every import counts, also those inside functions: a lazy import still ties the two modules together (it only
defers when the import runs), so it must follow the same rules as one at the top of the file."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import tunewise

# The stages in the order data flows through them: a module may import its own stage or an earlier layer.
# Stages in one layer (soup, serve, monitor; cli, testing) are peers and import neither each other.
LAYERS = {
    "core": 0,
    "models": 1,
    "data": 2,
    "train": 3,
    "evaluate": 4,
    "report": 5,
    "registry": 6,
    "export": 7,
    "soup": 8, "serve": 8, "monitor": 8,
    "pipeline": 9,
    "retrain": 10,
    "cli": 11, "testing": 11,
}
# Top-level names of tunewise that are part of a stage of another name.
STAGE_OF = {"__init__": "core", "errors": "core", "config": "core", "figures": "core", "metrics": "core"}


@dataclass(frozen=True)
class Import:
    importer: str  # module name, e.g. tunewise.data.card
    target: str  # the module imported, e.g. tunewise.report.plots
    names: tuple[str, ...]  # the names `from target import ...` takes; empty for a module
    where: str  # file:line
    statement: str  # the import as written
    typing_only: bool = False  # under `if TYPE_CHECKING:`: never runs

    def __str__(self) -> str:
        return f"{self.where}: {self.importer}: `{self.statement}`"


def module_files(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(root: Path, package: str) -> list[Import]:
    """Every import of a module of `package` by a module of `package`, at any depth of the file."""
    files = module_files(root, package)
    out = []
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                       for stmt in node.body for sub in ast.walk(stmt)}
        for node in ast.walk(tree):
            where = f"{path.relative_to(root.parent)}:{getattr(node, 'lineno', 0)}"
            typed = id(node) in typing_only
            if isinstance(node, ast.Import):
                out += [Import(name, a.name, (), where, ast.unparse(node), typed) for a in node.names
                        if a.name.split(".")[0] == package]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, name, path.name == "__init__.py")
                if module.split(".")[0] != package:
                    continue
                submodules = [a.name for a in node.names if f"{module}.{a.name}" in files]
                plain = tuple(a.name for a in node.names if f"{module}.{a.name}" not in files)
                out += [Import(name, f"{module}.{s}", (), where, ast.unparse(node), typed) for s in submodules]
                if plain:
                    out.append(Import(name, module, plain, where, ast.unparse(node), typed))
    return out


def stage(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return STAGE_OF.get(name, name)


def layer_violations(found: list[Import]) -> list[str]:
    out = []
    for imp in found:
        a, b = stage(imp.importer), stage(imp.target)
        for s in (a, b):
            if s not in LAYERS:
                out.append(f"{imp}: stage {s!r} has no layer; place it in LAYERS (tests/test_architecture.py)")
        if a in LAYERS and b in LAYERS and a != b and LAYERS[b] >= LAYERS[a]:
            out.append(f"{imp}: {a} (layer {LAYERS[a]}) may not import {b} (layer {LAYERS[b]}): "
                       "data flows forward only")
    return out


def private_violations(root: Path, package: str, found: list[Import]) -> list[str]:
    """`from m import _x`, `import m._x`, or `m._x` on an imported module, in any module other than m."""
    files = module_files(root, package)
    out = [f"{imp}: imports the private name {n!r} of another module"
           for imp in found for n in imp.names if n.startswith("_") and not n.startswith("__")]
    out += [f"{imp}: imports a private module" for imp in found
            if any(p.startswith("_") and not p.startswith("__") for p in imp.target.split("."))]
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        aliases = {}  # local name → module, for `import a.b as m` / `from a import b` (b a module)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in files})
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node, name, path.name == "__init__.py")
                aliases.update({a.asname or a.name: f"{module}.{a.name}" for a in node.names
                                if f"{module}.{a.name}" in files})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and aliases[node.value.id] != name):
                out.append(f"{path.relative_to(root.parent)}:{node.lineno}: {name}: uses the private name "
                           f"{aliases[node.value.id]}.{node.attr}")
    return out


def _runs(imp: Import) -> bool:
    # An import under TYPE_CHECKING (annotations only) never runs, so it cannot close a cycle; the layering and
    # private-name checks still see it.
    return imp.importer != imp.target and not imp.typing_only


def cycles(found: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted. Imports inside functions
    are edges too: deferring an import does not untie two modules that need each other."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        if _runs(imp):
            graph.setdefault(imp.importer, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def cycle_report(found: list[Import]) -> list[str]:
    out = []
    for component in cycles(found):
        members = set(component)
        edges = dict.fromkeys(f"    {imp}" for imp in found  # one line per statement
                              if imp.importer in members and imp.target in members and _runs(imp))
        out.append("import cycle between " + ", ".join(component) + ":\n" + "\n".join(edges))
    return out


ROOT = Path(tunewise.__file__).parent
FOUND = imports(ROOT, "tunewise")


def test_stages_import_only_their_own_or_earlier_stages():
    assert FOUND, "no imports found: the walk looks in the wrong place"
    problems = layer_violations(FOUND)
    assert not problems, "back-imports between stages:\n" + "\n".join(problems)


def test_no_module_imports_another_modules_private_names():
    problems = private_violations(ROOT, "tunewise", FOUND)
    assert not problems, "private names imported across modules:\n" + "\n".join(problems)


def test_no_import_cycles_between_modules():
    problems = cycle_report(FOUND)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_back_import_a_cycle_and_a_private_import(tmp_path):
    pkg = tmp_path / "tunewise"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "card.py").write_text("def plot():\n    from tunewise.report import _uri\n")
    (pkg / "data" / "a.py").write_text("from tunewise.data import b\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from . import a\n    return a._hidden\n")
    (pkg / "report.py").write_text("")
    (pkg / "data" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                       "    from tunewise.data.d import D\n")
    (pkg / "data" / "d.py").write_text("from tunewise.data.c import C\n")
    (pkg / "newstage.py").write_text("")
    (pkg / "pipeline.py").write_text("import tunewise.newstage\n")
    (pkg / "serve.py").write_text("from tunewise.config import RunConfig\nfrom tunewise import monitor\n")
    (pkg / "monitor.py").write_text("")
    (pkg / "config.py").write_text("from tunewise.errors import ConfigError\n")
    found = imports(pkg, "tunewise")
    layers = layer_violations(found)
    assert any("tunewise/data/card.py:2" in p and "data (layer 2) may not import report (layer 5)" in p
               for p in layers), layers
    assert any("stage 'newstage' has no layer" in p for p in layers), layers
    assert any("serve (layer 8) may not import monitor (layer 8)" in p for p in layers), layers
    assert len(layers) == 3, layers  # not serve → config, nor config → errors (one core stage)
    private = private_violations(pkg, "tunewise", found)
    assert any("'_uri'" in p for p in private) and any("tunewise.data.a._hidden" in p for p in private), private
    assert cycles(found) == [["tunewise.data.a", "tunewise.data.b"]]  # c ⇄ d only under TYPE_CHECKING
    assert "tunewise/data/b.py:2" in cycle_report(found)[0]
