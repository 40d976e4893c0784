"""Learning-rate schedules as functions of the global step (one step = one mini-batch).

Both take an optional linear warmup from ``warmup_start * base_lr`` up to ``base_lr`` over ``warmup_steps``.
"""
from __future__ import annotations

import math
from typing import Sequence


class Schedule:
    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0):
        self.base_lr = float(base_lr)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.warmup_start = float(warmup_start)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            frac = (step + 1) / self.warmup_steps
            return self.base_lr * (self.warmup_start + (1.0 - self.warmup_start) * frac)
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        return self.base_lr


class Constant(Schedule):
    pass


class Cosine(Schedule):
    """Cosine decay from ``base_lr`` (after warmup) to ``min_lr`` at ``total_steps``."""

    def __init__(self, base_lr, total_steps, warmup_steps=0, min_lr: float = 0.0, warmup_start: float = 0.0):
        super().__init__(base_lr, total_steps, warmup_steps, warmup_start)
        self.min_lr = float(min_lr)

    def after_warmup(self, step):
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t))


class StepDecay(Schedule):
    """Multiply by ``gamma`` at each milestone step (default: at 50% and 75% of training)."""

    def __init__(self, base_lr, total_steps, warmup_steps=0, milestones: Sequence[int] | None = None,
                 gamma: float = 0.1, warmup_start: float = 0.0):
        super().__init__(base_lr, total_steps, warmup_steps, warmup_start)
        self.milestones = sorted(int(m) for m in (milestones if milestones is not None else
                                                  (self.total_steps // 2, self.total_steps * 3 // 4)))
        self.gamma = float(gamma)

    def after_warmup(self, step):
        k = sum(1 for m in self.milestones if step >= m)
        return self.base_lr * self.gamma ** k


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0, **kwargs) -> Schedule:
    name = (name or "constant").lower()
    if name == "cosine":
        return Cosine(base_lr, total_steps, warmup_steps, **kwargs)
    if name == "step":
        return StepDecay(base_lr, total_steps, warmup_steps, **kwargs)
    if name in ("constant", "none"):
        return Constant(base_lr, total_steps, warmup_steps, **kwargs)
    raise ValueError(f"unknown schedule {name!r} (cosine, step, constant)")
