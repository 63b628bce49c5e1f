"""Every ``>>>`` example in src/xgir runs and gives the output its docstring shows.

The modules are found by a text scan (no import at collection time); each module's
examples run with :mod:`doctest` (``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` on).
``DOCUMENTED`` lists public functions whose docstrings must carry an example: the
shared primitives a reader is most likely to call first.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "xgir").rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(SRC).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()

DOCUMENTED = [
    "xgir.metrics.localisation:boxes_from_masks",
    "xgir.metrics.localisation:minmax_normalise",
    "xgir.metrics.localisation:irrelevant_overlap",
    "xgir.explain.targets:as_targets",
    "xgir.bench:mean_std",
    "xgir.bench:fmt",
    "xgir.explain.clusters:top_label_sets",
    "xgir.explain.clusters:ConfusionTree.from_top_labels",
    "xgir.explain.registry:explainer_info",
    "xgir.io:fingerprint",
    "xgir.data.transforms:Preprocess",
    "xgir.data.blur:gaussian_blur",
    "xgir.models.accuracy:accuracy_from_predictions",
    "xgir.models.inference:predict",
    "xgir.explain.gradcam:grad_cam",
    "xgir.models.inference:resolve_device",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} mentions '>>> ' but doctest finds no example in it"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


@pytest.mark.parametrize("target", DOCUMENTED)
def test_primitive_has_an_example(target: str) -> None:
    module_name, attr = target.split(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    doc = inspect.getdoc(obj) or ""
    assert ">>> " in doc, f"{target} has no doctested example in its docstring"
    assert module_name in MODULES or any(m.startswith(module_name) for m in MODULES)
