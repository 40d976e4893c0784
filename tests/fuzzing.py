"""The subprocess harness of the mutation fuzz tests (``test_fuzz_<kind>.py``: onnx, safetensors, paddle), each
providing ``run_case(case_dir) -> outcome``.

The test process generates each case (a directory of files) from ``numpy.random.default_rng([seed, index])``,
so any case can be regenerated from its index, and hands its path to one worker process over a pipe. The worker
runs the case and answers with one JSON line. A worker that dies (a segfault, an abort) or does not answer
within the per-case timeout (a hang) is recorded as a failure of that case and replaced; so is any answer that
is not one of the allowed outcomes. The worker runs with a 3 GiB address-space limit, so an allocation the
readers failed to bound surfaces as ``MemoryError`` instead of the OOM killer.

Budget per test: ``REFQUANT_FUZZ_CASES`` (default: the test's, about 10 s of cases; 0 = no limit) within
``REFQUANT_FUZZ_SECONDS`` (default 20, a cap, so a slow machine runs fewer cases rather than a longer test),
``REFQUANT_FUZZ_SEED`` (default 0), ``REFQUANT_FUZZ_CASE_TIMEOUT`` (seconds, default 30),
``REFQUANT_FUZZ_OUT`` (a directory that receives every failing case and a summary).
"""
from __future__ import annotations

import collections
import json
import os
import select
import shutil
import subprocess
import sys
import time
from typing import Callable, Iterator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DECOY = b"REFQUANT-DECOY-SECRET-0123456789"     # the bytes of a file no model may read (32 bytes)
MEMORY_LIMIT = 3 * 2 ** 30


def budget(default_cases: int = 200) -> tuple[float, int, int, float]:
    """(seconds, max cases or 0, seed, per-case timeout) from the environment."""
    env = os.environ
    return (float(env.get("REFQUANT_FUZZ_SECONDS", "20")), int(env.get("REFQUANT_FUZZ_CASES", default_cases)),
            int(env.get("REFQUANT_FUZZ_SEED", "0")), float(env.get("REFQUANT_FUZZ_CASE_TIMEOUT", "30")))


class _Worker:
    def __init__(self, kind: str, workdir: str):
        self.stderr_path = os.path.join(workdir, "worker.stderr")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", f"from tests.fuzzing import worker; worker({kind!r})"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     cwd=workdir, env=env)
        self.buf = b""

    def ask(self, case_dir: str, timeout: float):
        """The worker's answer for ``case_dir``; ("CRASH", detail) or ("HANG", detail) when it gives none."""
        try:
            self.proc.stdin.write(case_dir.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return "CRASH", self._stderr_tail()
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return "HANG", f"no answer within {timeout:.0f} s"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self.proc.wait()
                    return "CRASH", f"worker exited with {code}: {self._stderr_tail()}"
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _stderr_tail(self) -> str:
        self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read()[-3000:].decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.stderr.close()


def _write_case(case_dir: str, files: dict) -> None:
    """``files``: {relative name: bytes, or ("symlink", target)}."""
    os.makedirs(case_dir)
    for name, content in files.items():
        path = os.path.join(case_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            with open(path, "wb") as f:
                f.write(content)


def fuzz(kind: str, make_case: Callable[[int], tuple[str, dict]], workdir: str, default_cases: int = 200) -> dict:
    """Run cases ``make_case(index) -> (description, files)`` within the budget; returns the report
    ``{"cases", "seconds", "outcomes": Counter, "failures": [(index, description, outcome)]}``."""
    seconds, max_cases, _, timeout = budget(default_cases)
    with open(os.path.join(workdir, ".env"), "wb") as f:    # the decoy, outside every case directory
        f.write(DECOY)
    out_dir = os.environ.get("REFQUANT_FUZZ_OUT")
    start = time.monotonic()
    outcomes, failures = collections.Counter(), []
    worker = _Worker(kind, workdir)
    index = 0
    try:
        while time.monotonic() - start < seconds and (not max_cases or index < max_cases):
            description, files = make_case(index)
            case_dir = os.path.join(workdir, "cases", f"{index:07d}")
            _write_case(case_dir, files)
            answer = worker.ask(case_dir, timeout)
            if isinstance(answer, tuple):          # the worker died or hung: a new one for the next case
                outcome = f"FAIL {answer[0]}: {answer[1]}"
                worker.close()
                worker = _Worker(kind, workdir)
            else:
                outcome = answer["outcome"]
            outcomes[outcome.split(":")[0] if outcome.startswith("FAIL") else outcome] += 1
            if outcome.startswith("FAIL"):
                failures.append((index, description, outcome))
                if out_dir:
                    shutil.copytree(case_dir, os.path.join(out_dir, kind, f"{index:07d}"), symlinks=True,
                                    dirs_exist_ok=True)
            shutil.rmtree(case_dir)
            index += 1
    finally:
        worker.close()
    report = {"kind": kind, "cases": index, "seconds": round(time.monotonic() - start, 1), "seed": budget()[2],
              "outcomes": dict(outcomes), "failures": failures}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"{kind}_summary.json"), "w") as f:
            json.dump(report, f, indent=1)
    print(f"fuzz {kind}: {index} cases in {report['seconds']} s, outcomes {dict(outcomes)}, "
          f"{len(failures)} failures")
    return report


def failure_message(report: dict, limit: int = 8) -> str:
    lines = [f"{len(report['failures'])} of {report['cases']} {report['kind']} fuzz cases failed "
             f"(seed {report['seed']}; regenerate case i with make_case(i)):"]
    for index, description, outcome in report["failures"][:limit]:
        lines.append(f"  case {index} [{description}]: {outcome[:600]}")
    return "\n".join(lines)


# ---- the worker side -----------------------------------------------------------------------------------------
def _outcome_of(fn: Callable[[str], str], case_dir: str) -> str:
    try:
        return fn(case_dir)
    except BaseException as exc:  # noqa: BLE001 - the harness reports every escape as a failure
        return f"FAIL uncaught {type(exc).__name__}: {str(exc)[:500]}"


def worker(kind: str) -> None:
    """Read case directories from stdin, answer one JSON line each on the original stdout."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                               # stray prints go to stderr, never into the answers
    import importlib
    run_case = importlib.import_module(f"tests.test_fuzz_{kind}").run_case
    for line in sys.stdin:
        case_dir = line.strip()
        if not case_dir:
            continue
        out.write(json.dumps({"outcome": _outcome_of(run_case, case_dir)}) + "\n")
        out.flush()


def leaks_decoy(arrays: Iterator) -> bool:
    """Whether any array holds the decoy bytes, as read or widened from float16 to float32 (a reader followed a
    path out of the model's directory). Read as float64 and narrowed, the decoy is all infinities, which
    legitimate arrays hold too, so that reading is not looked for."""
    import numpy as np
    patterns = [DECOY[:16], np.frombuffer(DECOY[:8], "<f2").astype(np.float32).tobytes()]
    return any(p in a.tobytes() for a in arrays for p in patterns)
