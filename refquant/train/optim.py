"""Optimizers that update a model's trainable parameters in place from a gradient dict.

* :class:`SGD`: Paddle's ``Momentum`` (``v = mu * v + (g + wd * p)``, ``p -= lr * v``; Nesterov optional).
* :class:`Adam`: Adam with bias correction; ``weight_decay`` is L2 added to the gradient (Paddle's
  ``L2Decay`` regularizer), or decoupled as in AdamW with ``decoupled=True``.

Only names in ``model.trainable`` are touched, so batch-norm running statistics and constant tables are left
alone. Updates are computed in float32 (the parameters' dtype) and written into the existing arrays.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..graph import Model


class Optimizer:
    def __init__(self, model: Model, lr: float, weight_decay: float = 0.0, no_decay: Optional[set] = None):
        self.model = model
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        # By default every trainable parameter decays except 1-D ones (biases, norm scales and shifts).
        self.no_decay = {k for k in model.trainable if model.params[k].ndim <= 1} if no_decay is None \
            else set(no_decay)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.steps = 0

    def _decay(self, name: str) -> float:
        return 0.0 if name in self.no_decay else self.weight_decay

    def step(self, grads: dict[str, np.ndarray], lr: Optional[float] = None) -> None:
        lr = self.lr if lr is None else float(lr)
        self.steps += 1
        for name in sorted(self.model.trainable):
            g = grads.get(name)
            if g is None:
                continue
            p = self.model.params[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name!r} has shape {g.shape}, parameter {p.shape}")
            self._update(name, p, np.asarray(g, dtype=p.dtype), lr)

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"steps": self.steps, "state": {k: {s: v.copy() for s, v in d.items()} for k, d in self.state.items()}}


class SGD(Optimizer):
    """SGD with momentum (``momentum=0`` gives plain SGD) and L2 weight decay."""

    def __init__(self, model: Model, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False, no_decay: Optional[set] = None):
        super().__init__(model, lr, weight_decay, no_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, name, p, g, lr):
        wd = self._decay(name)
        if wd:
            g = g + p.dtype.type(wd) * p
        if self.momentum:
            st = self.state.setdefault(name, {"velocity": np.zeros_like(p)})
            v = st["velocity"]
            v *= p.dtype.type(self.momentum)
            v += g
            g = g + p.dtype.type(self.momentum) * v if self.nesterov else v
        p -= p.dtype.type(lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``decoupled=True`` applies weight decay as AdamW does."""

    def __init__(self, model: Model, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False,
                 no_decay: Optional[set] = None):
        super().__init__(model, lr, weight_decay, no_decay)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)
        self.decoupled = bool(decoupled)

    def _update(self, name, p, g, lr):
        wd = self._decay(name)
        if wd and not self.decoupled:
            g = g + p.dtype.type(wd) * p
        st = self.state.setdefault(name, {"m": np.zeros_like(p), "v": np.zeros_like(p), "t": np.zeros((), np.int64)})
        st["t"] += 1
        t = int(st["t"])
        m, v = st["m"], st["v"]
        m *= p.dtype.type(self.beta1)
        m += p.dtype.type(1 - self.beta1) * g
        v *= p.dtype.type(self.beta2)
        v += p.dtype.type(1 - self.beta2) * (g * g)
        step = lr * np.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        if wd and self.decoupled:
            p -= p.dtype.type(lr * wd) * p
        p -= p.dtype.type(step) * m / (np.sqrt(v) + p.dtype.type(self.epsilon))


def make_optimizer(name: str, model: Model, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                   **kwargs) -> Optimizer:
    """``"sgd"`` / ``"momentum"`` -> :class:`SGD`, ``"adam"`` -> :class:`Adam`, ``"adamw"`` -> decoupled Adam."""
    name = name.lower()
    if name in ("sgd", "momentum"):
        return SGD(model, lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
    if name == "adam":
        return Adam(model, lr, weight_decay=weight_decay, **kwargs)
    if name == "adamw":
        return Adam(model, lr, weight_decay=weight_decay, decoupled=True, **kwargs)
    raise ValueError(f"unknown optimizer {name!r} (sgd, adam, adamw)")
