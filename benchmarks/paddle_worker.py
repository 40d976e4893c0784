"""A worker process run by a python with paddle (``REFQUANT_PADDLE_PYTHON``): the benchmarks' Paddle columns.

refquant never imports paddle: the worker is a script run by that python, one JSON request per line on its
stdin and one JSON reply per line on its stdout; its stderr goes to a log whose tail is raised if it stops.
Legacy (non-PIR) programs: ``FLAGS_enable_pir_api=0`` is set for it, and its scripts call
``paddle.enable_static()``.
"""
from __future__ import annotations

import json
import os
import subprocess

#: names the python with paddle 3.3.1 that runs the workers; unset: the Paddle columns are skipped
ENV = "REFQUANT_PADDLE_PYTHON"
SKIPPED = f"{ENV} is not set (a python with paddle 3.3.1)"


def paddle_python() -> str | None:
    """The python named by ``REFQUANT_PADDLE_PYTHON``, or None (the Paddle columns are then skipped)."""
    return os.environ.get(ENV) or None


def paddle_env(**extra) -> dict:
    """This process's environment plus what a legacy-program Paddle worker needs (and ``extra``)."""
    return dict(os.environ, FLAGS_enable_pir_api="0", GLOG_minloglevel="2", **extra)


class PaddleWorker:
    """``script`` (written to ``folder/name.py``, :attr:`script`) running under ``python`` with ``args``; its
    first reply (e.g. ``{"ready": version}``) is :attr:`ready`, then :meth:`ask` sends one request and returns
    its reply."""

    def __init__(self, python: str, script: str, folder: str, args=(), name: str = "paddle_worker", **env):
        self.script = path = os.path.join(folder, name + ".py")
        with open(path, "w") as f:
            f.write(script)
        self.log = open(os.path.join(folder, name + ".log"), "w")
        self.proc = subprocess.Popen([python, path, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=paddle_env(**env))
        try:
            self.ready = self._reply()
        except BaseException:
            self.close()
            raise

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.log.flush()
            with open(self.log.name) as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"the Paddle worker stopped:\n{tail}")
        return json.loads(line)

    def ask(self, request) -> dict:
        """Send ``request`` (JSON) and return the worker's reply."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        """End the worker: its stdin closes and it returns (killed if it has not within a minute)."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
