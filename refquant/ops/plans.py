"""Per-call plans of the inference ops that run compiled kernels on constant weights.

A conv of a network is called again and again with new activations and the same weights, attributes and input
shape. Checking the weights and preparing what depends only on them (packed panels, per-column offsets, padded
scales) then belongs to the first call; later calls check only the activation. :class:`PlanCache` remembers one
plan per weight array, call key and attributes:

- only for weights that cannot change under the plan (:func:`frozen`: read-only arrays whose memory no writeable
  array owns, as :func:`refquant.deploy.convert_to_int8`, :func:`refquant.deploy.optimize_fp32` and
  :func:`refquant.io.load` store them); other calls take the op's unplanned route, which checks everything;
- the attributes are compared by value on every call (a dict edited in place gets a new plan), the other constant
  inputs by identity;
- an entry leaves with its weight array (a weak reference), and at most ``per_owner`` call keys (input shapes)
  are kept per weight.
"""
from __future__ import annotations

import copy
import weakref

import numpy as np


def frozen(a) -> bool:
    """Whether ``a`` is None or a read-only array whose data no writeable array owns (its base, if any, is a
    read-only array owning its data): what a plan may keep prepared values of."""
    if a is None:
        return True
    if not isinstance(a, np.ndarray) or a.flags.writeable:
        return False
    base = a.base
    return base is None or (isinstance(base, np.ndarray) and not base.flags.writeable and base.base is None)


def freeze(a: np.ndarray) -> np.ndarray:
    """Make ``a`` (and the array owning its data, when ``a`` is a view of one) read-only; returns ``a``."""
    if isinstance(a.base, np.ndarray) and a.base.base is None:
        a.base.flags.writeable = False
    a.flags.writeable = False
    return a


def same_attrs(a, b) -> bool:
    """a == b for attribute dicts, False where a value's comparison is not a bool (an array attribute)."""
    try:
        return bool(a == b)
    except (ValueError, TypeError):
        return False


class PlanCache:
    """``{id(owner): (weakref to owner, {key: (copy of attrs, constants, plan)})}`` for frozen owners."""

    def __init__(self, per_owner: int = 16):
        self.per_owner = per_owner
        self._entries: dict = {}

    def get(self, owner, key, attrs, constants=()):
        """The plan stored for ``owner`` (the weight array), ``key`` (the call's shapes), attributes equal to
        ``attrs`` and the same ``constants`` objects, or None."""
        entry = self._entries.get(id(owner))
        if entry is None or entry[0]() is not owner:
            return None
        hit = entry[1].get(key)
        if hit is None or len(hit[1]) != len(constants) or any(a is not b for a, b in zip(hit[1], constants)) \
                or not same_attrs(hit[0], attrs):
            return None
        return hit[2]

    @staticmethod
    def keeps(owner, constants=()) -> bool:
        """Whether :meth:`put` stores plans for this owner and these constants (all :func:`frozen`)."""
        return frozen(owner) and all(frozen(c) for c in constants)

    def put(self, owner, key, attrs, constants, plan):
        """Remember ``plan`` (see :meth:`get`) and return it; a plan for an owner that is not :func:`frozen`, or
        whose constants are not, is returned without being stored."""
        if not self.keeps(owner, constants):
            return plan
        entry = self._entries.get(id(owner))
        if entry is None or entry[0]() is not owner:
            k = id(owner)
            entry = self._entries[k] = (weakref.ref(owner, lambda _, k=k: self._entries.pop(k, None)), {})
        if len(entry[1]) >= self.per_owner:
            entry[1].clear()
        entry[1][key] = (copy.deepcopy(attrs), tuple(constants), plan)
        return plan
