"""Every ```python block in docs/*.md and README.md runs as written.

The blocks of one page run in order in one namespace (a later block may use an earlier one's names), with the
working directory a fresh temporary folder. The line before a block may mark it:

- ``<!-- skip: reason -->``: never run here (a signature synopsis, a run of minutes, files the reader has);
- ``<!-- needs: module, module -->``: run when those optional modules import, skipped otherwise.

A page with no block run is reported as skipped with the reasons."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARK = re.compile(r"<!--\s*(skip|needs):\s*(.+?)\s*-->\s*\Z")


def _missing(modules: str) -> list[str]:
    """The modules of a comma-separated list that are not installed (found, not imported: rapidocr_onnxruntime's
    package holds the PP-OCR model files refquant reads, but importing it needs OpenCV)."""
    return [m for m in (m.strip() for m in modules.split(",")) if importlib.util.find_spec(m) is None]


def blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, why it does not run here or None)`` for every python block of a markdown text."""
    out = []
    for m in FENCE.finditer(text):
        last = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark, why = MARK.search(last), None
        if mark and mark.group(1) == "skip":
            why = mark.group(2)
        elif mark and _missing(mark.group(2)):
            why = f"needs {', '.join(_missing(mark.group(2)))}"
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1), why))
    return out


def test_blocks_are_found():
    text = ("a\n<!-- skip: a synopsis -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n```bash\nz\n```\n"
            "<!-- needs: json -->\n```python\nw = 3\n```\n<!-- needs: json, no_such_module_here -->\n```python\nv\n```\n")
    assert blocks(text) == [(4, "x = 1\n", "a synopsis"), (8, "y = 2\n", None), (15, "w = 3\n", None),
                            (19, "v\n", "needs no_such_module_here")]


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p.read_text())], ids=lambda p: p.name)
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = blocks(page.read_text())
    ns = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for line, code, skip in found:
        if skip is not None:
            continue
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), ns)
        except Exception as exc:
            raise AssertionError(f"{page.relative_to(ROOT)}: the python block at line {line} fails: "
                                 f"{type(exc).__name__}: {exc}") from exc
        ran += 1
    if not ran:
        pytest.skip("; ".join(sorted({s for _, _, s in found})))
