"""The calibration-algorithm registry (refquant.calibration.algorithms) is the one list of algorithms: every
consumer's choices equal it, no source file spells a list of algorithm names of its own, and an algorithm
registered in a test-local copy of the registry appears in the CLI, calibrate and quant_post_static."""
import ast
import pathlib

import numpy as np
import pytest

from refquant.calibration import AbsMaxObserver, algorithms, calibrate
from refquant.calibration.algorithms import (ALGORITHMS, AlgorithmSpec, paddle_algorithms, refused_algorithms,
                                             register_algorithm, static_algorithms, two_pass_algorithms)
from refquant.errors import ArgumentError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _algo_choices(parser, command="quantize"):
    sub = next(a for a in parser._actions if a.dest == "command")
    return tuple(next(a for a in sub.choices[command]._actions if a.dest == "algo").choices)


def test_registry_contents():
    assert tuple(ALGORITHMS) == ("KL", "hist", "abs_max", "avg", "mse", "emd", "min_max")
    assert static_algorithms() == ("KL", "hist", "abs_max", "avg", "mse", "emd")
    assert two_pass_algorithms() == ("KL", "hist")
    assert set(refused_algorithms()) == {"min_max", "ptf"}
    assert paddle_algorithms() == tuple(ALGORITHMS) + ("ptf",)


def test_every_consumer_lists_the_registry():
    import benchmarks.bench_real as bench_real
    from refquant import calibration, paddleslim, report
    from refquant.check import scales
    from refquant.cli import build_parser
    from refquant.quant import post_static

    assert _algo_choices(build_parser()) == static_algorithms()
    assert report.static_algos() == static_algorithms()
    assert bench_real.ALGOS == static_algorithms()
    assert post_static.ALGOS == static_algorithms() and calibration.ALGOS == tuple(ALGORITHMS)
    assert set(scales.THRESHOLD_ALGOS) == set(static_algorithms()) and scales.THRESHOLD_ALGOS[0] == "abs_max"
    assert set(scales.TensorStats().single) | set(two_pass_algorithms()) | {"abs_max"} == set(static_algorithms())
    for algo in refused_algorithms():  # Paddle's names refquant refuses: each with its reason
        with pytest.raises(NotImplementedError):
            post_static._check_algo("t", algo)
        with pytest.raises(ArgumentError, match="not supported"):
            paddleslim.quant_post_static(None, "/nonexistent", "/nonexistent/out", algo=algo)
    for algo in static_algorithms():
        assert post_static._check_algo("t", algo) == algo


def _literal_lists(path):
    """(line, names) of every tuple / list / set / dict-key literal in ``path`` naming registered algorithms."""
    names = set(paddle_algorithms())
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        elts = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(
            node, (ast.Tuple, ast.List, ast.Set)) else ()
        hits = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in names]
        if hits:
            yield node.lineno, hits


def test_no_hard_coded_algorithm_lists():
    """A literal naming 3 or more algorithms in the package or the benchmarks (a list that would miss a new one),
    or every quant_post_static algorithm in a test, must be derived from the registry instead. Pairs such as
    ("mse", "emd") name loss kinds or observer methods, not the list of algorithms."""
    found = []
    for path in sorted((ROOT / "refquant").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py")):
        if path.name == "algorithms.py" and path.parent.name == "calibration":
            continue
        found += [(path.relative_to(ROOT), line, hits) for line, hits in _literal_lists(path) if len(hits) >= 3]
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name != pathlib.Path(__file__).name:
            found += [(path.relative_to(ROOT), line, hits) for line, hits in _literal_lists(path)
                      if set(static_algorithms()) <= set(hits)]
    assert not found, f"hard-coded algorithm lists (use refquant.calibration.algorithms): {found}"


def test_the_scan_finds_a_hard_coded_list(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('ALGOS = ("KL", "hist", "abs_max")\nCOLORS = {"mse": 1, "emd": 2, "avg": 3}\nx = ("mse", "y")\n')
    assert [len(h) for _, h in _literal_lists(path)] == [3, 3, 1]


@pytest.fixture
def local_registry(monkeypatch):
    """A test-local copy of the registry (the module's dict is restored afterwards)."""
    monkeypatch.setattr(algorithms, "ALGORITHMS", dict(algorithms.ALGORITHMS))
    yield algorithms.ALGORITHMS
    assert "abs_max_copy" not in ALGORITHMS


def test_a_registered_algorithm_reaches_every_consumer(local_registry):
    from refquant import report
    from refquant.cli import build_parser
    from refquant.models.lenet import lenet5
    from refquant.quant import quant_post_static, thresholds

    register_algorithm("abs_max_copy", AlgorithmSpec(AbsMaxObserver, doc="abs_max under another name"))
    assert "abs_max_copy" in local_registry and "abs_max_copy" not in ALGORITHMS
    assert _algo_choices(build_parser())[-1] == "abs_max_copy"
    assert report.static_algos()[-1] == "abs_max_copy"
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((2, 1, 28, 28)).astype(np.float32)} for _ in range(2)]
    assert calibrate(batches, "abs_max_copy").thresholds == calibrate(batches, "abs_max").thresholds
    m = lenet5(input_size=28)
    a, b = quant_post_static(m, batches, algo="abs_max"), quant_post_static(m, batches, algo="abs_max_copy")
    assert thresholds(a).keys() == thresholds(b).keys()
    assert all(np.array_equal(thresholds(a)[k], thresholds(b)[k]) for k in thresholds(a))
    with pytest.raises(ValueError, match="registered already"):
        register_algorithm("abs_max_copy", AlgorithmSpec(AbsMaxObserver))


def test_bad_specs_are_refused(local_registry):
    with pytest.raises(TypeError):
        AlgorithmSpec(dict)
    with pytest.raises(ValueError, match="passes"):
        AlgorithmSpec(AbsMaxObserver, passes=3)
    with pytest.raises(ValueError, match="option"):
        AlgorithmSpec(AbsMaxObserver, options=("bins", "colour"))
    for name in ("KL", "ptf", "ranges", ""):
        with pytest.raises(ValueError):
            register_algorithm(name, AlgorithmSpec(AbsMaxObserver))
