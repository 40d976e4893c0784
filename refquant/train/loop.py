"""Training and evaluation loops over the executor's forward / backward.

``fit`` trains a logits model in place: it appends the loss with :func:`with_loss`, iterates shuffled
mini-batches (seeded, so the same seed gives bit-identical weights), runs forward in training mode with the
tape, backward from the mean loss, and steps the optimizer with the scheduled learning rate.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import numpy as np

from ..executor import backward, forward
from ..graph import Model, Op, TensorSpec
from .batches import iter_batches
from .optim import Optimizer, make_optimizer
from .schedule import Schedule, make_schedule


def _fresh(name: str, taken: set[str]) -> str:
    k = 0
    while f"{name}_{k}.tmp_0" in taken:
        k += 1
    return f"{name}_{k}"


def with_loss(model: Model, logits: Optional[str] = None, label_name: str = "label", *,
              share_params: bool = False) -> Model:
    """A training copy of ``model``: ``softmax_with_cross_entropy(logits, label)`` then ``mean`` appended.

    The copy has an extra int64 input ``label_name`` of shape ``(None,)``; its outputs are ``[logits, loss]`` and
    ``meta["loss"]`` / ``meta["logits"]`` / ``meta["label"]`` name them. ``share_params=True`` reuses the
    parameter arrays instead of copying them (what :func:`fit` does, so in-place updates reach ``model``).
    """
    logits = logits or model.outputs[0]
    if label_name in model.inputs:
        raise ValueError(f"model already has an input named {label_name!r}")
    taken = set(model.params) | set(model.inputs) | {n for op in model.ops for n in op.outputs}
    if logits not in taken:
        raise ValueError(f"logits tensor {logits!r} is not in the model")
    base = _fresh("softmax_with_cross_entropy", taken)
    mean_base = _fresh("mean", taken)
    softmax, loss_vec, loss = f"{base}.tmp_0", f"{base}.tmp_1", f"{mean_base}.tmp_0"
    src = model if share_params else model.copy()
    ops = [Op(op.type, list(op.inputs), list(op.outputs), dict(op.attrs), op.name) for op in src.ops]
    ops.append(Op("softmax_with_cross_entropy", [logits, label_name], [softmax, loss_vec],
                  {"axis": -1, "ignore_index": -100}, base))
    ops.append(Op("mean", [loss_vec], [loss], {}, mean_base))
    meta = dict(src.meta)
    meta.update(loss=loss, logits=logits, label=label_name)
    inputs = [TensorSpec(s.name, tuple(s.shape), s.dtype) for s in src.input_specs]
    inputs.append(TensorSpec(label_name, (None,), "int64"))
    return Model(ops, src.params, inputs, [logits, loss], name=src.name, meta=meta, trainable=set(src.trainable))


class ProgressBar:
    """One status line on stderr, rewritten in place (on a terminal) or printed once per epoch (in a log)."""

    def __init__(self, enabled: bool = True, stream=None, width: int = 24):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._shown = False

    def update(self, text: str, frac: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and (not self.tty or now - self._last < 0.1):
            return
        self._last = now
        filled = int(round(self.width * min(1.0, max(0.0, frac))))
        bar = "=" * filled + " " * (self.width - filled)
        line = f"[{bar}] {text}"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _first_input(model: Model, input_name: Optional[str]) -> str:
    return input_name or model.inputs[0]


def predict(model: Model, x: np.ndarray, batch_size: int = 256, input_name: Optional[str] = None,
            output: Optional[str] = None) -> np.ndarray:
    """Run ``model`` in inference mode over ``x`` in batches; returns the (concatenated) output."""
    name = _first_input(model, input_name)
    out = output or model.outputs[0]
    parts = [model.run({name: xb}, [out])[out] for xb in iter_batches(x, None, batch_size)]
    return np.concatenate(parts, axis=0)


def evaluate(model: Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
             input_name: Optional[str] = None) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of ``model``'s logits on ``(x, y)``."""
    logits = predict(model, x, batch_size, input_name)
    return float(np.mean(np.argmax(logits.reshape(len(y), -1), axis=1) == np.asarray(y).reshape(-1)))


def fit(model: Model, x: np.ndarray, y: np.ndarray, epochs: int = 10, batch_size: int = 64,
        optimizer: str | Optimizer = "sgd", lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
        schedule: str | Schedule | None = "cosine", warmup_epochs: float = 0.0, seed: int = 0,
        progress: bool = True, x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None,
        augment: Optional[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = None,
        input_name: Optional[str] = None, label_name: str = "label", drop_last: bool = False,
        callback: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train ``model`` (a logits model) in place; returns the history.

    ``optimizer``: "sgd" (momentum), "adam", "adamw" or an :class:`Optimizer` built on ``model``.
    ``schedule``: "cosine", "step", "constant"/None, or a :class:`Schedule` over global steps; ``warmup_epochs``
    of linear warmup. ``augment(xb, rng)`` transforms each training batch. ``x_val``/``y_val``: accuracy after
    each epoch. ``callback(epoch, history)`` runs after each epoch.

    History: ``loss``/``acc`` (train, per epoch, running over the batches), ``val_acc``, ``lr`` (at epoch end),
    ``seconds`` (per epoch) and ``total_seconds``.
    """
    x = np.asarray(x)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples, y has {len(y)}")
    name = _first_input(model, input_name)
    train = with_loss(model, label_name=label_name, share_params=True)
    loss_name, logits_name = train.meta["loss"], train.meta["logits"]
    steps_per_epoch = len(x) // batch_size if drop_last else -(-len(x) // batch_size)
    total = max(1, steps_per_epoch * int(epochs))
    opt = optimizer if isinstance(optimizer, Optimizer) else \
        make_optimizer(optimizer, model, lr, momentum=momentum, weight_decay=weight_decay)
    opt.model = train  # same arrays; the training graph's params dict also receives batch-norm state
    sched = schedule if isinstance(schedule, Schedule) else \
        make_schedule(schedule, opt.lr, total, int(round(warmup_epochs * steps_per_epoch)))
    shuffle_rng = np.random.default_rng(seed)
    dropout_rng = np.random.default_rng([seed, 1])
    augment_rng = np.random.default_rng([seed, 2])
    bar = ProgressBar(progress)
    history: dict = {"loss": [], "acc": [], "val_acc": [], "lr": [], "seconds": []}
    step = 0
    start = time.perf_counter()
    try:
        for epoch in range(int(epochs)):
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for xb, yb in iter_batches(x, y, batch_size, shuffle=True, seed=shuffle_rng, drop_last=drop_last):
                if augment is not None:
                    xb = augment(xb, augment_rng)
                cur_lr = sched(step)
                env, tape = forward(train, {name: xb, label_name: yb}, training=True, rng=dropout_rng,
                                    record=True)
                loss = env[loss_name]
                pred = np.argmax(env[logits_name].reshape(len(yb), -1), axis=1)  # before this step's update
                if not np.isfinite(loss):
                    raise FloatingPointError(f"loss is {float(loss)} at epoch {epoch + 1}, step {step} "
                                             f"(lr {cur_lr:.4g}); lower the learning rate")
                grads = backward(train, env, tape, {loss_name: np.ones((), dtype=loss.dtype)})
                opt.step(grads, lr=cur_lr)
                del env, tape, grads
                n = len(yb)
                loss_sum += float(loss) * n
                seen += n
                step += 1
                correct += int(np.sum(pred == yb))
                bar.update(f"epoch {epoch + 1}/{epochs} loss {loss_sum / seen:.4f} "
                           f"acc {100 * correct / seen:.1f}% lr {cur_lr:.3g}",
                           (epoch + seen / len(x)) / epochs)
            history["loss"].append(loss_sum / max(1, seen))
            history["acc"].append(correct / max(1, seen))
            history["lr"].append(sched(max(0, step - 1)))
            history["seconds"].append(time.perf_counter() - t0)
            model.params.update({k: train.params[k] for k in model.params})
            val = evaluate(model, x_val, y_val, input_name=name) if x_val is not None else None
            history["val_acc"].append(val)
            text = f"epoch {epoch + 1}/{epochs} loss {history['loss'][-1]:.4f} " \
                   f"acc {100 * history['acc'][-1]:.1f}% {history['seconds'][-1]:.1f}s/epoch"
            if val is not None:
                text += f" val {100 * val:.2f}%"
            bar.update(text, (epoch + 1) / epochs, force=True)
            if callback is not None:
                callback(epoch, history)
    finally:
        model.params.update({k: train.params[k] for k in model.params})
        bar.close()
    history["total_seconds"] = time.perf_counter() - start
    return history
