"""The import graph of refquant, read from the source with ``ast`` (nothing is imported), and its floors.

A node is a module: ``refquant.x.y`` for ``refquant/x/y.py`` (a package is its ``__init__.py``) and
``refquant._kernels.k`` for ``kernels/k.pyx``. An edge ``a -> b`` is any ``import`` of ``b`` in ``a``, at module level
or inside a function, absolute or relative; ``from p import y`` is an edge to ``p.y`` when ``p.y`` is a module and to
``p`` otherwise. Importing ``p.y`` also runs ``p/__init__.py``; that implicit edge is not drawn (it would tie every
package into one knot and hide the real structure).

The floor of a module is one above the highest floor it imports (a module importing nothing from refquant is on
floor 0); a cycle is one node. ``python -m tests._imports [ROOT]`` prints the summary for a checkout.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_PYX_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(refquant[\w.]*)[ \t]+c?import[ \t]+(\([^)]*\)|[^\n#]*)"
                         r"|c?import[ \t]+(refquant[\w.]*))", re.M)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every refquant module name -> its source file (``.py`` under ``refquant/``, ``.pyx`` under ``kernels/``)."""
    found = {}
    for path in sorted((root / "refquant").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((root / "kernels").glob("*.pyx")):
        found[f"refquant._kernels.{path.stem}"] = path
    return found


def _target(name: str, known) -> str | None:
    """The nearest known module at or above ``name`` (``refquant.ops.registry.OpDef`` -> ``refquant.ops.registry``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _from_import(base: str, names, known):
    for alias in names:
        sub = f"{base}.{alias}"
        yield sub if sub in known else _target(base, known)


def imports(name: str, path: Path, known) -> set[str]:
    """The refquant modules that module ``name`` (source ``path``) imports."""
    text = path.read_text(encoding="utf-8")
    found = []
    if path.suffix == ".pyx":
        for m in _PYX_IMPORT.finditer(text):
            if m.group(3):
                found.append(_target(m.group(3), known))
            else:
                names = [n.split(" as ")[0].strip() for n in m.group(2).strip("()").split(",")]
                found.extend(_from_import(m.group(1), [n for n in names if n], known))
        return {f for f in found if f and f != name}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(_target(a.name, known) for a in node.names if a.name.split(".")[0] == "refquant")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == "refquant":
                base = node.module
            else:
                continue
            found.extend(_from_import(base, [a.name for a in node.names], known))
    return {f for f in found if f and f != name}


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the set of refquant modules it imports."""
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(g) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(g) + 100))
    try:
        for v in sorted(g):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(out)


def floors(g) -> dict[str, int]:
    """module -> its floor (longest import chain below it; the modules of one cycle share a floor)."""
    comp = {v: v for v in g}
    for c in cycles(g):
        for v in c:
            comp[v] = c[0]
    below = {}
    for v, deps in g.items():
        below.setdefault(comp[v], set()).update(comp[d] for d in deps if comp[d] != comp[v])
    level = {}

    def floor(c):
        if c not in level:
            level[c] = 0  # placeholder; the condensed graph has no cycles
            level[c] = 1 + max((floor(d) for d in below[c]), default=-1)
        return level[c]

    return {v: floor(comp[v]) for v in g}


def layer_of(name: str, table) -> int | None:
    """The intended floor of ``name``: the entry of ``table`` (module or package name -> floor) that names it, or
    its closest enclosing package below ``refquant`` itself (which names only ``refquant/__init__.py``)."""
    if name in table:
        return table[name]
    while "." in name.rpartition(".")[0]:
        name = name.rpartition(".")[0]
        if name in table:
            return table[name]
    return None


def back_edges(g, table) -> list[tuple[str, str]]:
    """The imports ``a -> b`` where ``b``'s intended floor is above ``a``'s."""
    return sorted((a, b) for a, deps in g.items() for b in deps
                  if None not in (layer_of(a, table), layer_of(b, table)) and layer_of(b, table) > layer_of(a, table))


def line_counts(root: Path = ROOT) -> dict[str, int]:
    """Source file (relative path) -> its number of lines, for every module in the graph."""
    return {str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines()) for p in modules(root).values()}


def _summary(root: Path, table, cap: int) -> None:
    g = graph(root)
    fl = floors(g)
    print(f"{len(g)} modules, {sum(map(len, g.values()))} imports, {max(fl.values()) + 1} floors")
    for c in cycles(g):
        print("cycle:", " <-> ".join(c))
    for a, b in back_edges(g, table):
        print(f"back-edge: {a} (floor {layer_of(a, table)}) -> {b} (floor {layer_of(b, table)})")
    unplaced = sorted(m for m in g if layer_of(m, table) is None)
    if unplaced:
        print("not in the layer table:", ", ".join(unplaced))
    lines = line_counts(root)
    for ext in (".py", ".pyx"):
        mine = {p: n for p, n in lines.items() if p.endswith(ext)}
        over = {p: n for p, n in mine.items() if n > cap}
        print(f"{ext}: {len(mine)} files, {sum(mine.values())} lines; over {cap}: {over}")


if __name__ == "__main__":
    from tests.test_layout import LINE_CAP, layer_table
    _summary(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT, layer_table(), LINE_CAP)
