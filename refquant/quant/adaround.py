"""AdaRound: learn whether each weight rounds down or up (Nagel et al., ICML 2020, arXiv 2004.10568).

Rounding to nearest is not the best rounding for a layer's *output*. AdaRound keeps the floor ``F = floor(V)`` of
the scaled weight ``V = clip(W, -T_c, T_c) / T_c * qmax`` and learns, per weight, a soft offset ``h(alpha)`` in
[0, 1] (a rectified sigmoid), minimising, one layer at a time,

    L(alpha) = || op(x, W) - op(x_q, W~(alpha)) ||^2  +  lambda * sum(1 - |2 h(alpha) - 1|^beta)

with ``W~ = clip(F + h(alpha), -qmax, qmax) * T_c / qmax``, ``h(alpha) = clip(sigmoid(alpha) * (zeta - gamma) +
gamma, 0, 1)``, ``gamma = -0.1``, ``zeta = 1.1``. The reconstruction term is summed over the channel axis and
averaged over the rest (batch and pixels), as the reference implementations do; the regulariser (``lambda`` =
0.01) is off during a warm start (20% of the iterations), then ``beta`` anneals from 20 to 2 so that ``h`` is
driven to 0 or 1. At the end the rounding is hardened: ``q = F + (h(alpha) >= 0.5)``, an integer in [-qmax, qmax].

``x`` is the layer's FP32 input, ``x_q`` the same input through the layer's activation quant-dequant (the
deployed layer sees ``x_q``); the target is the FP32 output without bias (a bias cancels in the difference).
Adam updates ``alpha``; the gradient reaches it through the layer's own backward (refquant's op registry) and
``dW~/dalpha = T_c / qmax * (zeta - gamma) * sigmoid'(alpha)`` where ``h`` is not clipped, 0 where it is.

``mode="paddle"`` reproduces what Paddle's ``adaround.py`` stores: its fast-mode exit
fires at iteration 0 for every layer, so the stored weight is ``F + h(alpha_0)`` with ``alpha_0`` chosen so that
``h(alpha_0) = V - F``: the *unrounded* scaled weight (clipped, not quantized). Paddle 3.3.1 itself crashes on
``round_type='adaround'``; this mode shows what its 2.x versions produced.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..errors import ArgumentError
from ..graph import Op
from ..ops import OpContext, get_op
from .. import _args
from ..reference import rounding

GAMMA, ZETA = -0.1, 1.1


def rectified_sigmoid(alpha):
    """``h(alpha) = clip(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1)``."""
    return np.clip(_sigmoid(alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_alpha(frac):
    """The ``alpha`` with ``h(alpha) = frac`` (the soft weight starts at the FP32 weight):
    ``alpha = -ln((zeta - gamma) / (frac - gamma) - 1)``."""
    frac = np.asarray(frac)
    return -np.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0)


def beta_schedule(it: int, iters: int, warm_start: float, start: float = 20.0, end: float = 2.0) -> float:
    """``beta = end + (start - end) / 2 * (1 + cos(pi * rel))``, ``rel`` = progress after the warm start."""
    w = warm_start * iters
    rel = (it - w) / max(iters - w, 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * rel))


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def scaled_weight(w, threshold, axis: Optional[int], bits: int):
    """``V = clip(W, -T_c, T_c) / T_c * qmax`` (float32, unrounded) and ``T_c`` shaped to broadcast on ``W``."""
    w = np.asarray(w, dtype=np.float32)
    t = rounding.safe_threshold(np.asarray(threshold, dtype=np.float32))
    if axis is not None:
        t = rounding.channel_view(t, w.ndim, axis)
    return (np.clip(w, -t, t) / t) * np.float32(rounding.qmax(bits)), t


def paddle_adaround_weight(w, threshold, axis: Optional[int], bits: int = 8):
    """What Paddle's AdaRound stores (quant units, not integers): ``F + h(alpha_0)``, computed in float32."""
    v, _ = scaled_weight(w, threshold, axis, bits)
    floor = np.floor(v)
    alpha = initial_alpha(v - floor).astype(np.float32)
    return (floor + rectified_sigmoid(alpha).astype(np.float32)).astype(np.float32)


def adaround_weight(op: Op, w, threshold, axis: Optional[int], inputs: Sequence[np.ndarray], *, bits: int = 8,
                    act_threshold: Optional[float] = None, iters: int = 1000, lr: float = 1e-2,
                    reg_weight: float = 0.01, warm_start: float = 0.2, beta_range=(20.0, 2.0)) -> np.ndarray:
    """Learned integer weights (float32, in [-qmax, qmax]) of ``op`` (conv2d, depthwise_conv2d, mul, matmul)
    for weight ``w`` with thresholds ``threshold`` along ``axis``.

    ``inputs``: the op's FP32 input (its first input) for each calibration batch; iteration ``i`` uses batch
    ``i % len(inputs)``. ``act_threshold``: the input's activation threshold (None: the input is not quantized).
    """
    who = "adaround_weight"
    bits = _args.bits(who, "bits", bits)
    iters = _args.integer(who, "iters", iters, 0)  # 0: the initial (nearest) rounding
    lr = _args.real(who, "lr", lr, 0.0, lo_open=True)
    reg_weight = _args.real(who, "reg_weight", reg_weight, 0.0)
    warm_start = _args.real(who, "warm_start", warm_start, 0.0, 1.0, hi_open=True)
    if act_threshold is not None:
        act_threshold = _args.real(who, "act_threshold", act_threshold, 0.0)
    beta_range = tuple(_args.real(who, "beta_range", b, 0.0, lo_open=True) for b in beta_range)
    if len(beta_range) != 2:
        raise ArgumentError(f"{who}: beta_range must be a (start, end) pair, got {beta_range}")
    if not inputs:
        raise ArgumentError(f"{who}: no calibration inputs")
    opdef = get_op(op.type, op.name)
    qm = rounding.qmax(bits)
    v, t = scaled_weight(w, threshold, axis, bits)
    floor = np.floor(v).astype(np.float64)
    alpha = initial_alpha(v.astype(np.float64) - floor)
    step = (t / np.float32(qm)).astype(np.float64)  # W~ = (F + h) * step
    w32 = np.asarray(w, dtype=np.float32)

    def apply(x, weight, grad_of=None):
        ctx = OpContext()
        y = opdef.forward(ctx, op.attrs, x, weight)
        if grad_of is None:
            return y
        ctx.needs_input_grad = (False, True)
        return y, opdef.backward(ctx, op.attrs, grad_of(y))[1]

    xs, targets = [], []
    for x in inputs:
        x = np.asarray(x, dtype=np.float32)
        targets.append(apply(x, w32))
        xs.append(x if act_threshold is None else rounding.quant_dequant_op(x, act_threshold, bits))

    m = np.zeros_like(alpha)
    s = np.zeros_like(alpha)
    b1, b2, eps = 0.9, 0.999, 1e-8
    start, end = beta_range
    for it in range(int(iters)):
        x, target = xs[it % len(xs)], targets[it % len(xs)]
        sig = _sigmoid(alpha)
        h_raw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(h_raw, 0.0, 1.0)
        q = np.clip(floor + h, -qm, qm)
        soft = (q * step).astype(np.float32)
        positions = target.size / target.shape[1]  # sum over channels (axis 1), mean over the rest

        def grad_of(y):
            return (2.0 / positions) * (y - target)

        _, g_soft = apply(x, soft, grad_of)
        g_h = np.asarray(g_soft, dtype=np.float64) * step * ((floor + h > -qm) & (floor + h < qm))
        if it >= warm_start * iters:
            beta = beta_schedule(it, int(iters), warm_start, start, end)
            u = 2.0 * h - 1.0
            g_h = g_h - reg_weight * beta * np.abs(u) ** (beta - 1.0) * np.sign(u) * 2.0
        g = g_h * (ZETA - GAMMA) * sig * (1.0 - sig) * ((h_raw > 0.0) & (h_raw < 1.0))
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** (it + 1))
        s_hat = s / (1 - b2 ** (it + 1))
        alpha = alpha - lr * m_hat / (np.sqrt(s_hat) + eps)
    return np.clip(floor + (rectified_sigmoid(alpha) >= 0.5), -qm, qm).astype(np.float32)


def reconstruction_error(op: Op, w, q, threshold, axis: Optional[int], inputs: Sequence[np.ndarray],
                         bits: int = 8, act_threshold: Optional[float] = None) -> float:
    """Mean over batches of ``sum_channels (op(x, W) - op(x_q, q * T_c / qmax))^2`` averaged over positions:
    the quantity AdaRound minimises, to compare a rounding with nearest rounding."""
    opdef = get_op(op.type, op.name)
    w_dq = rounding.dequantize_weight(q, threshold, axis, bits)
    total = 0.0
    for x in inputs:
        x = np.asarray(x, dtype=np.float32)
        xq = x if act_threshold is None else rounding.quant_dequant_op(x, act_threshold, bits)
        d = opdef.forward(OpContext(), op.attrs, x, np.asarray(w, np.float32)) \
            - opdef.forward(OpContext(), op.attrs, xq, w_dq)
        total += float((d.astype(np.float64) ** 2).sum() / (d.size / d.shape[1]))
    return total / len(inputs)
