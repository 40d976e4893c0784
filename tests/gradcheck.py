"""Central finite differences in float64 against an op's backward (the vector-Jacobian product)."""
from __future__ import annotations

import numpy as np

from refquant.ops import get_op, OpContext


def run_op(op_type, inputs, attrs, training=False, seed=0):
    ctx = OpContext(training, np.random.default_rng(seed))
    out = get_op(op_type).forward(ctx, attrs, *inputs)
    return ctx, (out if isinstance(out, tuple) else (out,))


def check_grad(op_type, inputs, attrs=None, wrt=None, *, training=False, eps=1e-6, rtol=1e-5, atol=1e-7,
               out_index=None, seed=0):
    """Compare ``backward`` with central differences of ``sum(w * forward(...))`` for random ``w``.

    ``inputs`` are float64 arrays (or integer / None for non-differentiable ones); ``wrt`` lists the input
    positions to check (default: every float input). Returns the max abs error seen.
    """
    attrs = dict(attrs or {})
    inputs = [np.array(a, copy=True) if a is not None else None for a in inputs]
    wrt = [i for i, a in enumerate(inputs) if a is not None and a.dtype == np.float64] if wrt is None else wrt
    ctx, outs = run_op(op_type, inputs, attrs, training, seed)
    rng = np.random.default_rng(1234)
    picks = range(len(outs)) if out_index is None else [out_index]
    weights = [rng.standard_normal(o.shape) if k in picks and np.asarray(o).dtype == np.float64
               else np.zeros(np.shape(o)) for k, o in enumerate(outs)]
    ctx.needs_input_grad = tuple(i in wrt for i in range(len(inputs)))
    grads = get_op(op_type).backward(ctx, attrs, *[w.astype(np.float64) for w in weights])

    def objective():
        _, o = run_op(op_type, inputs, attrs, training, seed)
        return sum(float(np.sum(w * oo)) for w, oo in zip(weights, o) if np.asarray(oo).dtype == np.float64)

    worst = 0.0
    for i in wrt:
        x = inputs[i]
        num = np.zeros_like(x)
        flat = x.reshape(-1)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            f_plus = objective()
            flat[k] = old - eps
            f_minus = objective()
            flat[k] = old
            num.reshape(-1)[k] = (f_plus - f_minus) / (2 * eps)
        ana = np.asarray(grads[i], dtype=np.float64)
        assert ana.shape == x.shape, f"{op_type}: grad of input {i} has shape {ana.shape}, input {x.shape}"
        np.testing.assert_allclose(ana, num, rtol=rtol, atol=atol, err_msg=f"{op_type}: input {i}")
        worst = max(worst, float(np.max(np.abs(ana - num))) if x.size else 0.0)
    return worst
