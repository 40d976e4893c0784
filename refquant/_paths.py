"""The one chooser of a compiled kernel family's ISA path (qgemm, qdirect, floatops).

A family's C table lists the paths it was built with, best first, "portable" last; the CPU decides which of them
run (``kernels/include/cpu_features.h``). Calls take the best one unless the environment says otherwise:

- ``REFQUANT_PATH_<FAMILY>=<name>`` (e.g. ``REFQUANT_PATH_QGEMM=avx2``) forces one path of that family:
  ValueError for a name the family does not have, RuntimeError for one this CPU or build cannot run;
- ``REFQUANT_FORCE_PORTABLE=1`` forces "portable" in every family (it wins over the per-family variable).

The environment is read when a family first needs its path. A leaf module (no refquant imports): the compiled
extensions import it.
"""
from __future__ import annotations

import os

FORCE_PORTABLE = "REFQUANT_FORCE_PORTABLE"


def env_var(family: str) -> str:
    """The variable that forces ``family``'s path, e.g. REFQUANT_PATH_QGEMM."""
    return f"REFQUANT_PATH_{family.upper()}"


def _on(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


class IsaPaths:
    """The ISA paths of one kernel family: ``names`` (its C table's, best first, the index is the C table index),
    ``supported(i)`` (1 if this CPU runs entry i) and ``known`` (every path name the family has on any
    architecture, so forcing an ARM path on x86 says "cannot run it" rather than "unknown")."""

    def __init__(self, family: str, names, supported, known=None):
        self.family = family
        self.names = tuple(names)
        self.known = tuple(known) if known is not None else self.names
        self._available = tuple(name for i, name in enumerate(self.names) if supported(i))
        self._current = None

    def available(self) -> tuple:
        """The paths this CPU runs, best first ("portable" is always there)."""
        return self._available

    def forced(self):
        """The environment setting that picks the path ("REFQUANT_FORCE_PORTABLE=1" or
        "REFQUANT_PATH_<FAMILY>=<name>"), or None when the best available path is taken."""
        if _on(FORCE_PORTABLE):
            return f"{FORCE_PORTABLE}=1"
        value = os.environ.get(env_var(self.family), "")
        return f"{env_var(self.family)}={value}" if value else None

    def current(self) -> str:
        """The path calls take without ``path=``: "portable" under REFQUANT_FORCE_PORTABLE=1, else the one
        REFQUANT_PATH_<FAMILY> names (ValueError if unknown, RuntimeError if this CPU cannot run it), else the
        best available. Chosen once."""
        if self._current is None:
            self._current = self._choose()
        return self._current

    def reset(self) -> None:
        """Choose again at the next call (tests that change the environment)."""
        self._current = None

    def _choose(self) -> str:
        if _on(FORCE_PORTABLE):
            return "portable"
        var = env_var(self.family)
        forced = os.environ.get(var, "")
        if not forced:
            return self._available[0]
        if forced not in self.known:
            raise ValueError(f"{var}={forced!r}: unknown path, expected one of {self.known}")
        if forced not in self._available:
            raise RuntimeError(f"{var}={forced!r}: this CPU/build cannot run it "
                               f"(available: {', '.join(self._available)})")
        return forced

    def index(self, path=None) -> int:
        """The C table index of ``path``, or of the current path when it is None; ValueError for a path that is
        unknown or that this CPU cannot run."""
        path = self.current() if path is None else path
        if path not in self.known:
            raise ValueError(f"{self.family}: path must be one of {self.known}, got {path!r}")
        if path not in self._available:
            raise ValueError(f"{self.family}: path {path!r} is not available here "
                             f"(available: {', '.join(self._available)})")
        return self.names.index(path)
