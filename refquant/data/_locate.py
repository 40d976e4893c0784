"""Find the embedded data files from a source checkout or an installed package."""
from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _candidates() -> list[Path]:
    found = []
    env = os.environ.get("REFQUANT_DATA")
    if env:
        found.append(Path(env))
    found.append(_HERE.parents[1] / "data")   # source checkout: <repo>/data next to <repo>/refquant
    found.append(_HERE.parent / "_data")      # installed package: setup.py copies data/*.npz here
    return found


def data_file(name: str) -> Path:
    """Path of the data file ``name`` (e.g. ``"digits.npz"``); raises FileNotFoundError naming where it looked."""
    places = _candidates()
    for place in places:
        path = place / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"refquant data file {name!r} not found; looked in " +
                            ", ".join(str(p) for p in places) + " (set REFQUANT_DATA to the folder holding it)")


def data_dir() -> Path:
    """The first data folder that holds ``digits.npz``."""
    return data_file("digits.npz").parent
