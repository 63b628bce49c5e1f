"""The package's import graph stays layered and its types check (issue: one home for every shared piece):
data -> models -> train | explain -> metrics -> correct -> bench -> app -> cli, with train and
explain independent of each other. The contract lives in pyproject.toml ([tool.importlinter])."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency (pip install -e '.[test]')"
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": str(Path(sys.executable).parent)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_type_check_is_clean():
    """mypy over src/xgir (settings in pyproject.toml [tool.mypy]) reports no error."""
    exe = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    assert exe, "mypy is a test dependency (pip install -e '.[test]')"
    run = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Success: no issues found" in run.stdout


def test_correct_package_exports_its_public_names():
    import xgir.correct as correct

    for name in correct.__all__:
        obj = getattr(correct, name)
        assert obj.__module__.startswith("xgir.correct."), (name, obj.__module__)
