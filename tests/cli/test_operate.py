import sys

import pytest
from typer.testing import CliRunner

from tunewise.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "module", "fix"), [
    (["serve"], "fastapi", "the serve extra: pip install 'tunewise[serve]'"),
    (["keys", "list"], "prometheus_client", "the serve extra: pip install 'tunewise[serve]'"),
    (["registry", "list"], "sqlalchemy", "the registry extra: pip install 'tunewise[registry]'"),
    (["monitor"], "sqlalchemy", "the registry extra: pip install 'tunewise[registry]'"),
    (["tune", "my.yaml"], "optuna", "the tune extra: pip install 'tunewise[tune]'"),
])
def test_a_command_without_its_extra_names_the_pip_install_in_one_line(monkeypatch, args, module, fix):
    monkeypatch.setitem(sys.modules, module, None)  # what `import module` finds when it is not installed
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    command = " ".join(a for a in args if not a.endswith(".yaml"))
    assert result.output == f"error: tunewise {command} needs {fix}\n"
