import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tunewise.errors import EXTRAS, MissingExtraError, require_extra

ROOT = Path(__file__).parents[1]
OPTIONAL = ("fastapi", "starlette", "uvicorn", "prometheus_client", "sqlalchemy", "psycopg", "optuna")


def test_require_extra_names_the_pip_install_for_what_is_missing(monkeypatch):
    require_extra("tunewise serve", "serve", "registry")  # the test environment has every extra
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` finds when it is not installed
    with pytest.raises(MissingExtraError) as err:
        require_extra("tunewise serve", "serve", "registry")
    assert str(err.value) == "tunewise serve needs the serve extra: pip install 'tunewise[serve]'"
    assert err.value.exit_code == 2
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(MissingExtraError) as err:
        require_extra("tunewise serve", "serve", "registry")
    assert str(err.value).endswith("needs the serve and registry extras: pip install 'tunewise[serve,registry]'")


def test_every_extra_module_is_installed_by_its_pyproject_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dists = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        declared = {canonicalize_name(Requirement(req).name) for req in extras[extra]}
        for module in modules:
            assert {canonicalize_name(d) for d in dists[module]} & declared, f"{module} is not in the {extra} extra"
    [everything] = extras["all"]
    assert set(EXTRAS) <= Requirement(everything).extras
    assert "tunewise[all]" in extras["dev"]  # `make test` installs .[dev] and tests every extra


def test_the_core_imports_and_checks_data_without_any_extra(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    texts = [f"message {hashlib.sha1(str(i).encode()).hexdigest()[:20]}" for i in range(20)]  # no near duplicates
    rows = [{"text": text, "label": "ab"[i % 2]} for i, text in enumerate(texts)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    script = (f"import sys\nfor m in {OPTIONAL!r}: sys.modules[m] = None\n"
              "import tunewise.pipeline\nfrom tunewise.cli import app\nsys.argv[0] = 'tunewise'\napp()")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    check = subprocess.run([sys.executable, "-c", script, "data", "check", str(data), "--out", str(tmp_path / "o"),
                            "--model", str(tiny_model_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "20 usable" in check.stdout
    serve = subprocess.run([sys.executable, "-c", script, "serve"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert serve.returncode == 2
    assert serve.stderr.strip() == ("error: tunewise serve needs the serve and registry extras: "
                                    "pip install 'tunewise[serve,registry]'")
