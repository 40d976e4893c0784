"""The source tree keeps the floors and the line budget of docs/layout.md (read from the source, nothing imported).

docs/layout.md is the one table: every module's floor, the per-file and total line budgets, and the files allowed
over the per-file budget. These tests parse it and check the import graph of :mod:`tests._imports` against it.
"""
from __future__ import annotations

import re
import textwrap

import pytest

from tests import _imports

DOC = _imports.ROOT / "docs" / "layout.md"

#: Cycles allowed, each with its reason. ``Model.run`` and ``Model.infer_shapes`` are the executor as methods of
#: the graph (``model.run(feeds)`` reads like the math); graph.py imports the executor inside those two methods
#: only, so the graph module itself loads and reads without it.
ALLOWED_CYCLES = [["refquant.executor", "refquant.graph"]]


def _module_name(path: str) -> str:
    """``refquant/ops/`` -> ``refquant.ops``; ``refquant/ops/conv.py`` -> ``refquant.ops.conv``;
    ``kernels/qgemm.pyx`` -> ``refquant._kernels.qgemm``."""
    if path.startswith("kernels/") and path.endswith(".pyx"):
        return "refquant._kernels." + path[len("kernels/"):-len(".pyx")]
    name = path.rstrip("/").removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def _rows(text: str):
    """(section heading, first cell, the other cells) of every table row in ``text``, header rows skipped."""
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not set(line) <= set("|- "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            yield heading, cells[0], cells[1:]


def layer_table(text: str | None = None) -> dict[str, int]:
    """``{module name: floor}`` from the ``## Floor N: ...`` tables of docs/layout.md."""
    table = {}
    for heading, first, _ in _rows(DOC.read_text(encoding="utf-8") if text is None else text):
        m = re.fullmatch(r"Floor (\d+):.*", heading)
        path = re.fullmatch(r"`([^`]+)`", first)
        if m and path:
            name = _module_name(path.group(1))
            assert name not in table, f"docs/layout.md lists {path.group(1)} twice"
            table[name] = int(m.group(1))
    return table


def budgets(text: str | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """``({budget row: lines}, {allowed file: lines})`` from docs/layout.md's line-budget tables."""
    limits, allowed = {}, {}
    for heading, first, rest in _rows(DOC.read_text(encoding="utf-8") if text is None else text):
        if heading == "Line budget" and rest and rest[0].isdigit():
            if first.startswith("`") and len(rest) == 2:
                allowed[first.strip("`")] = int(rest[0])
            elif first != "file":
                limits[first] = int(rest[0])
    return limits, allowed


LINE_CAP = budgets()[0]["one `.py` or `.pyx` file"]


@pytest.fixture(scope="module")
def graph():
    return _imports.graph()


def test_every_module_has_a_floor(graph):
    """Each module of the tree has a row in docs/layout.md, and each row names a module of the tree."""
    table = layer_table()
    assert sorted(set(graph) - set(table)) == [], "modules missing from docs/layout.md"
    assert sorted(set(table) - set(graph)) == [], "docs/layout.md lists modules that do not exist"


def test_a_package_and_its_modules_share_a_floor():
    table = layer_table()
    for name, floor in table.items():
        parent = name.rpartition(".")[0]
        if parent in table and parent != "refquant":
            assert floor == table[parent], f"{name} is on floor {floor}, its package {parent} on {table[parent]}"


def test_no_import_runs_up(graph):
    table = layer_table()
    floor = lambda m: _imports.layer_of(m, table)  # noqa: E731
    up = [f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})" for a, b in _imports.back_edges(graph, table)]
    assert up == []


def test_no_cycles(graph):
    assert _imports.cycles(graph) == ALLOWED_CYCLES


def test_kernels_import_only_their_twins_and_leaves(graph):
    bad = [f"{k} imports {m}" for k in graph if k.startswith("refquant._kernels.") and k != "refquant._kernels"
           for m in sorted(graph[k]) if not m.startswith("refquant.reference.") and graph.get(m)]
    assert bad == []


def test_line_budget_per_file():
    limits, allowed = budgets()
    lines = _imports.line_counts()
    over = {p: n for p, n in lines.items() if n > LINE_CAP and not (p in allowed and n <= allowed[p])}
    assert over == {}, f"over {LINE_CAP} lines (split the file, or list it with a reason in docs/layout.md)"
    stale = {p: lines.get(p) for p in allowed if lines.get(p, 0) <= LINE_CAP}
    assert stale == {}, "files allowed over the budget that no longer need it"


def test_line_budget_totals():
    limits, _ = budgets()
    root = _imports.ROOT
    py = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in (root / "refquant").rglob("*.py"))
    kernels = sum(len(p.read_text(encoding="utf-8").splitlines()) for ext in ("pyx", "pxd", "h")
                  for p in (root / "kernels").rglob(f"*.{ext}"))
    assert py <= limits["all of `refquant/**/*.py`"]
    assert kernels <= limits["all of `kernels/` (`.pyx`, `.pxd`, `.h`)"]


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The reader finds module-level, function-level, relative and ``from p import module`` imports, and the
    imports of a ``.pyx`` file; floors, cycles and back-edges follow from them."""
    files = {
        "refquant/__init__.py": "from . import b\n",
        "refquant/a.py": "import numpy\n",
        "refquant/b.py": "from .pkg import c\n",
        "refquant/pkg/__init__.py": "",
        "refquant/pkg/c.py": "def f():\n    from ..a import x\n    import refquant.pkg.d\n",
        "refquant/pkg/d.py": "from refquant import b\n",
        "kernels/k.pyx": "from refquant.pkg import (c,\n    d)\ncimport numpy\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(textwrap.dedent(text))
    g = _imports.graph(tmp_path)
    assert g == {"refquant": {"refquant.b"}, "refquant.a": set(), "refquant.b": {"refquant.pkg.c"},
                 "refquant.pkg": set(), "refquant.pkg.c": {"refquant.a", "refquant.pkg.d"},
                 "refquant.pkg.d": {"refquant.b"}, "refquant._kernels.k": {"refquant.pkg.c", "refquant.pkg.d"}}
    assert _imports.cycles(g) == [["refquant.b", "refquant.pkg.c", "refquant.pkg.d"]]
    assert _imports.floors(g)["refquant"] == 2
    table = {"refquant.a": 0, "refquant.pkg": 1, "refquant.b": 2, "refquant": 3, "refquant._kernels": 0}
    assert ("refquant.pkg.d", "refquant.b") in _imports.back_edges(g, table)
    assert ("refquant._kernels.k", "refquant.pkg.c") in _imports.back_edges(g, table)


def test_the_doc_tables_parse():
    text = textwrap.dedent("""\
        ## Floor 0: a
        | module | job |
        |---|---|
        | `refquant/errors.py` | errors |
        ## Floor 1: b
        | module | job |
        |---|---|
        | `refquant/ops/` | ops |
        | `kernels/qgemm.pyx` | gemm |
        ## Line budget
        | budget | lines |
        |---|---|
        | one file | 10 |
        | file | lines | why |
        |---|---|---|
        | `refquant/x.py` | 12 | a table |
        """)
    assert layer_table(text) == {"refquant.errors": 0, "refquant.ops": 1, "refquant._kernels.qgemm": 1}
    assert budgets(text) == ({"one file": 10}, {"refquant/x.py": 12})
