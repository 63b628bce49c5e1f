"""The documentation in docs/: it builds with MkDocs in strict mode (broken links, unknown
API names and bad nav entries fail), and every ```python snippet of every page runs.

Snippets of one page run in order in one namespace (a page is one example session), in a
temporary working folder with its own cache, so they write nothing into the repository.
Only blocks fenced exactly as ```python run: show code that must not run (it needs files or
hours) as ```text, ```bash or ```py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
PAGES = sorted(DOCS.glob("*.md"))


def snippets(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return FENCE.findall(page.read_text(encoding="utf-8"))


def test_every_stage_has_a_page() -> None:
    names = {p.stem for p in PAGES}
    for stage in ("index", "data", "models", "explain", "metrics", "correct", "bench", "cli"):
        assert stage in names, f"docs/{stage}.md is missing"


def test_pages_with_examples_have_runnable_snippets() -> None:
    for stage in ("data", "models", "explain", "metrics", "correct"):
        assert snippets(DOCS / f"{stage}.md"), f"docs/{stage}.md has no ```python example"


def test_no_reference_outside_the_repository() -> None:
    """The docs, the README and the code cite the repository's own docs, not a brief that a
    clone does not have."""
    files = [ROOT / "README.md", *PAGES, *(ROOT / "src").rglob("*.py")]
    bad = [str(f.relative_to(ROOT)) for f in files if "DESIGN.md" in f.read_text(encoding="utf-8")]
    assert not bad, f"files citing DESIGN.md: {bad}"


def test_readme_links_point_to_existing_pages() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)", text)
    assert links, "the README links to no page of docs/"
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, f"README links to missing pages: {missing}"


@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: p.name)
def test_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    from xgir.bench import one_thread

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XGIR_CACHE", str(tmp_path / "cache"))
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(snippets(page)):
        try:
            with one_thread():  # tiny models: one thread is faster on a shared CPU
                exec(compile(code, f"{page.name} snippet {i + 1}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - report which snippet failed
            raise AssertionError(f"{page.name} snippet {i + 1} failed: {type(err).__name__}: {err}") from err


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: every nav page exists, every internal link and anchor
    resolves, and every ``::: module`` of the API page imports and renders."""
    import importlib.util

    assert importlib.util.find_spec("mkdocs") and importlib.util.find_spec("mkdocstrings_handlers"), (
        "mkdocs and mkdocstrings[python] are missing: pip install -e '.[test]'")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "explain" / "index.html").is_file()
