"""INT8 GEMM u8 x s8 -> s32 with a fused epilogue: the NumPy twin of ``kernels/qgemm.pyx``.

``pack_b`` builds the same bytes as the compiled kernel (so either side accepts the other's packed weights):

    [0, 64)          header: b"RQGEMMv1", int32 version 1, int32 NR = 16, int64 K, N, Kp, Np, int32 flags,
                     12 zero bytes. flags bit 0 (PAIRS_FIT_S16): every K pair (4g, 4g+1), (4g+2, 4g+3) of every
                     column has |w0| + |w1| <= 128, so 255 * (|w0| + |w1|) fits s16 and AVX2's vpmaddubsw is
                     exact on these weights (``pair_flags``)
    [64, 64+Kp*Np)   panels of 16 columns x groups of 4 K: panel p, group g, column c, i < 4 holds
                     w[4g + i, 16p + c] at 64 + p*Kp*16 + 64g + 4c + i (zero padded to Kp = ceil4(K), Np = ceil16(N))
    then             int32 colsum_b[n] = sum_k w[k, n] for n < Np

``gemm_u8s8`` computes, in int32 arithmetic that wraps modulo 2^32 (as the kernels do):

    acc[m, n] = sum_k a[m, k] * w[k, n] - a_zero * col_sum[n] + bias[n]
    "s32":        out = acc
    "f32":        out = min(max(float32(acc) * scale[n] (+ fbias[n]), lo), hi)       lo/hi default -inf/+inf;
                                                                                     fbias float32, optional
    "u8" / "s8":  out = min(max(rint(float32(acc) * scale[n]) + out_zero, lo), hi)   in float32; rint rounds half
                                                                                     to even; lo/hi default to
                                                                                     the type's range
A multiply of two float32 values is rounded once (no fused multiply-add), which is what NumPy's float32 ``*`` does.
"""
from __future__ import annotations

import math
import struct
import weakref
from typing import NamedTuple, Optional

import numpy as np

NR, KG, HEADER_BYTES, MAGIC, VERSION = 16, 4, 64, b"RQGEMMv1", 1
FLAGS_AT, PAIRS_FIT_S16 = 48, 1
OUT_DTYPES = {"s32": np.int32, "f32": np.float32, "u8": np.uint8, "s8": np.int8}
_INT_RANGE = {"u8": (0, 255), "s8": (-128, 127)}


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def _check_weights(w, name):
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{name}: w must be a numpy.ndarray, got {type(w).__name__}")
    if w.dtype != np.int8:
        raise TypeError(f"{name}: w must be int8, got {w.dtype}")
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"{name}: w must be a non-empty 2-D (K, N) array, got shape {w.shape}")


def col_sums(w: np.ndarray) -> np.ndarray:
    """int32 (N,): sum_k w[k, n]."""
    _check_weights(w, "col_sums")
    return np.sum(w, axis=0, dtype=np.int32)


def pair_flags(panels: np.ndarray) -> int:
    """PAIRS_FIT_S16 if every K pair (4g, 4g+1), (4g+2, 4g+3) of every column has |w0| + |w1| <= 128, else 0.
    ``panels``: the packed weights as (panel, group, column, 4); scanned a few panels at a time (little memory)."""
    for p0 in range(0, panels.shape[0], 16):
        block = np.abs(panels[p0:p0 + 16].astype(np.int16))
        if int((block[..., 0::2] + block[..., 1::2]).max(initial=0)) > 128:
            return 0
    return PAIRS_FIT_S16


def header_flags(packed: np.ndarray) -> int:
    """The flags a packed array's header records (PAIRS_FIT_S16 or 0)."""
    return int(np.ascontiguousarray(packed[FLAGS_AT:FLAGS_AT + 4]).view(np.int32)[0])


def set_header_flags(packed: np.ndarray, flags: int) -> None:
    """Write a packed array's header flags in place."""
    packed[FLAGS_AT:FLAGS_AT + 4] = np.array([flags], dtype=np.int32).view(np.int8)


def refresh_flags(packed: np.ndarray) -> None:
    """Recompute the header flags of a packed array from its panels, in place: a packed array read from a file
    must not be trusted to say its weights fit (a wrong PAIRS_FIT_S16 would let vpmaddubsw saturate)."""
    _check_packed(packed)
    set_header_flags(packed, pair_flags(_panels(packed)))


def _panels(packed: np.ndarray) -> np.ndarray:
    """The panels of a (validated) packed array as a (panel, group, column, 4) view."""
    Kp, Np = (int(v) for v in np.ascontiguousarray(packed[32:48]).view(np.int64))
    return packed[HEADER_BYTES:HEADER_BYTES + Kp * Np].reshape(Np // NR, Kp // KG, NR, KG)


def pack_b(w: np.ndarray) -> np.ndarray:
    """The packed weights (1-D int8, 64-byte aligned), byte for byte what the compiled pack_b writes."""
    _check_weights(w, "pack_b")
    K, N = w.shape
    Kp, Np = _round_up(K, KG), _round_up(N, NR)
    wp = np.zeros((Kp, Np), dtype=np.int8)
    wp[:K, :N] = w
    # (Kp, Np) -> [panel p][group g][column c][i]
    panels = wp.reshape(Kp // KG, KG, Np // NR, NR).transpose(2, 0, 3, 1)
    header = np.zeros(HEADER_BYTES, dtype=np.uint8)
    header[:8] = np.frombuffer(MAGIC, dtype=np.uint8)
    header[8:16] = np.array([VERSION, NR], dtype=np.int32).view(np.uint8)
    header[16:48] = np.array([K, N, Kp, Np], dtype=np.int64).view(np.uint8)
    header[FLAGS_AT:FLAGS_AT + 4] = np.array([pair_flags(panels)], dtype=np.int32).view(np.uint8)
    colsum = np.sum(wp, axis=0, dtype=np.int32)
    nbytes = HEADER_BYTES + Kp * Np + 4 * Np
    packed = aligned_empty(nbytes, np.int8)
    packed[:HEADER_BYTES] = header.view(np.int8)
    packed[HEADER_BYTES:HEADER_BYTES + Kp * Np] = panels.reshape(-1)
    packed[HEADER_BYTES + Kp * Np:] = colsum.view(np.int8)
    return packed


def aligned_empty(count: int, dtype) -> np.ndarray:
    """A 1-D array of ``count`` items of ``dtype`` whose data starts on a 64-byte boundary (a cache line: packed
    weights are read in whole lines)."""
    itemsize = np.dtype(dtype).itemsize
    buf = np.empty(count + 64 // itemsize, dtype=dtype)
    off = (-buf.ctypes.data) % 64 // itemsize
    return buf[off:off + count]


def unpack_b(packed: np.ndarray, K: int, N: int) -> np.ndarray:
    """w (K, N) back from a packed array, after checking its header against (K, N)."""
    Kp, Np = _check_packed(packed, K, N)
    return _panels(packed).transpose(1, 3, 0, 2).reshape(Kp, Np)[:K, :N]


def _check_packed(packed, K=None, N=None) -> tuple[int, int]:
    """(Kp, Np) of a valid packed array (its header matching (K, N) when given); ValueError otherwise."""
    if not isinstance(packed, np.ndarray) or packed.dtype != np.int8 or packed.ndim != 1 \
            or not packed.flags.c_contiguous:
        raise ValueError("gemm_u8s8: packed must be the 1-D int8 array returned by pack_b(w)")
    header = packed[:HEADER_BYTES].tobytes()  # one copy, unpacked in native byte order (as pack_b wrote it)
    if packed.shape[0] < HEADER_BYTES or header[:8] != MAGIC:
        raise ValueError("gemm_u8s8: packed is not a qgemm packed array (bad magic): use pack_b(w)")
    version, nr = struct.unpack_from("=2i", header, 8)
    if version != VERSION or nr != NR:
        raise ValueError("gemm_u8s8: packed has another layout version: pack the weights again")
    pk, pn, Kp, Np = struct.unpack_from("=4q", header, 16)
    if K is not None and (pk, pn) != (K, N):
        raise ValueError(f"gemm_u8s8: packed holds weights of K={pk}, N={pn}, called with K={K}, N={N}")
    if min(pk, pn) < 1 or max(pk, pn) >= 2**31 or (Kp, Np) != (_round_up(pk, KG), _round_up(pn, NR)) \
            or packed.shape[0] != HEADER_BYTES + Kp * Np + 4 * Np:
        raise ValueError("gemm_u8s8: packed has the wrong size for its header (truncated or altered)")
    return Kp, Np


def _vector(x, n, dtype, name):
    """x as a contiguous (n,) array of dtype (a Python scalar is broadcast); TypeError/ValueError otherwise."""
    if isinstance(x, np.ndarray):
        if x.dtype != dtype:
            raise TypeError(f"gemm_u8s8: {name} must be {np.dtype(dtype).name}, got {x.dtype}")
        if x.shape != (n,):
            raise ValueError(f"gemm_u8s8: {name} must have shape ({n},), got {x.shape}")
        return np.ascontiguousarray(x)
    if isinstance(x, (int, float, np.number)) and not isinstance(x, bool):
        if dtype == np.int32 and not float(x).is_integer():
            raise TypeError(f"gemm_u8s8: {name} must be an integer, got {x!r}")
        return np.full(n, x, dtype=dtype)
    raise TypeError(f"gemm_u8s8: {name} must be a {np.dtype(dtype).name} ndarray of shape ({n},), "
                    f"got {type(x).__name__}")


def _epilogue_scalars(out_dtype, out_zero, lo, hi, has_scale):
    """Validate the scalar epilogue arguments: (out_zero, lo, hi) as floats (lo/hi default to the type's range,
    -inf/+inf for f32)."""
    if out_dtype == "s32":
        if has_scale or lo is not None or hi is not None or out_zero:
            raise ValueError('gemm_u8s8: scale, lo, hi and out_zero do not apply to out_dtype="s32"')
        return 0.0, 0.0, 0.0
    if not has_scale:
        raise ValueError(f'gemm_u8s8: out_dtype="{out_dtype}" needs scale (float32 (N,))')
    if out_dtype == "f32":
        if out_zero:
            raise ValueError('gemm_u8s8: out_zero does not apply to out_dtype="f32"')
        lo = -math.inf if lo is None else float(np.float32(lo))
        hi = math.inf if hi is None else float(np.float32(hi))
    else:
        tmin, tmax = _INT_RANGE[out_dtype]
        lo = tmin if lo is None else lo
        hi = tmax if hi is None else hi
        for name, v in (("out_zero", out_zero), ("lo", lo), ("hi", hi)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not float(v).is_integer() \
                    or not tmin <= v <= tmax:
                raise ValueError(f'gemm_u8s8: {name} must be an integer in [{tmin}, {tmax}] for '
                                 f'out_dtype="{out_dtype}", got {v!r}')
        out_zero, lo, hi = float(out_zero), float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"gemm_u8s8: need lo <= hi, got lo={lo}, hi={hi}")
    return float(out_zero), lo, hi


def check_a(a, K):
    """Validate the activation: uint8 (M, K), M >= 1, contiguous last axis, non-negative row stride."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"gemm_u8s8: a must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.uint8:
        raise TypeError(f"gemm_u8s8: a must be uint8 (shift s8 activations by +128 and pass a_zero=128), "
                        f"got {a.dtype}")
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"gemm_u8s8: a must be 2-D (M, K) with M >= 1, got shape {a.shape}")
    if a.shape[1] != K:
        raise ValueError(f"gemm_u8s8: a has K={a.shape[1]} columns but the weights were packed for K={K}")
    if K > 1 and a.strides[1] != 1:
        raise ValueError("gemm_u8s8: the last axis of a must be contiguous (rows may have a stride)")
    if a.strides[0] < 0:
        raise ValueError("gemm_u8s8: a must have a non-negative row stride")


def check_out(out, M, N, out_dtype, a):
    """Validate a preallocated output: (M, N) of out_dtype, writeable, contiguous last axis, not overlapping the
    activation ``a`` (the kernel writes out while it reads a)."""
    dtype = OUT_DTYPES[out_dtype]
    if not isinstance(out, np.ndarray):
        raise TypeError(f"gemm_u8s8: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f'gemm_u8s8: out must be {np.dtype(dtype).name} for out_dtype="{out_dtype}", got {out.dtype}')
    if out.shape != (M, N):
        raise ValueError(f"gemm_u8s8: out must have shape ({M}, {N}), got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("gemm_u8s8: out is read-only")
    if not out.flags.aligned:
        raise ValueError("gemm_u8s8: out must be aligned to its element size")
    isz = out.itemsize
    if (N > 1 and out.strides[1] != isz) or out.strides[0] < 0 or out.strides[0] % isz:
        raise ValueError("gemm_u8s8: the last axis of out must be contiguous with a non-negative row stride")
    if np.may_share_memory(out, a):
        raise ValueError("gemm_u8s8: out overlaps a")


def check_a_zero(a_zero, col_sum):
    """a_zero: an int in [0, 255]; a nonzero one needs col_sum."""
    if isinstance(a_zero, bool) or not isinstance(a_zero, (int, np.integer)) or not 0 <= a_zero <= 255:
        raise ValueError(f"gemm_u8s8: a_zero must be an integer in [0, 255] (0 or 128), got {a_zero!r}")
    if a_zero and col_sum is None:
        raise ValueError("gemm_u8s8: a_zero != 0 needs col_sum (qgemm.col_sums(w))")
    return int(a_zero)


class GemmArgs(NamedTuple):
    """The validated arguments of gemm_u8s8 (check_plan): vectors of N entries, or None where not given."""
    K: int
    N: int
    a_zero: int
    col_sum: Optional[np.ndarray]    # int32, when a_zero != 0
    bias: Optional[np.ndarray]       # int32
    scale: Optional[np.ndarray]      # float32, finite, for out_dtype != "s32"
    out_zero: float
    lo: float
    hi: float
    chain: Optional[tuple]           # qdirect.check_chain's (constants, hs, want_float, quantize) or None
    fbias: Optional[np.ndarray] = None   # float32, added to the f32 output before the clamp
    out_dtype: str = "s32"


def check_plan(packed, K, N, *, a_zero=0, col_sum=None, bias=None, scale=None, out_dtype="s32", out_zero=0,
               lo=None, hi=None, chain=None, fbias=None) -> GemmArgs:
    """The one validation of gemm_u8s8's arguments but the activation and ``out`` (:func:`prepare_gemm`), for the
    twin and the compiled kernel alike (so both reject the same inputs with the same errors): TypeError for a
    wrong type or dtype, ValueError for a wrong value, shape or packed array."""
    if chain is not None:
        from . import qdirect
        if out_dtype != "f32":
            raise ValueError('gemm_u8s8: chain needs out_dtype="f32" and no out')
        chain = qdirect.check_chain(**chain)
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or isinstance(N, bool) \
            or not isinstance(N, (int, np.integer)):
        raise TypeError(f"gemm_u8s8: K and N must be ints, got {K!r}, {N!r}")
    K, N = int(K), int(N)
    if K < 1 or N < 1:
        raise ValueError(f"gemm_u8s8: need K >= 1 and N >= 1, got K={K}, N={N}")
    _check_packed(packed, K, N)
    if not isinstance(out_dtype, str) or out_dtype not in OUT_DTYPES:
        raise ValueError(f"gemm_u8s8: out_dtype must be one of {list(OUT_DTYPES)}, got {out_dtype!r}")
    a_zero = check_a_zero(a_zero, col_sum)
    out_zero, lo, hi = _epilogue_scalars(out_dtype, out_zero, lo, hi, scale is not None)
    col_sum = _vector(col_sum, N, np.int32, "col_sum") if a_zero else None
    bias = _vector(bias, N, np.int32, "bias") if bias is not None else None
    if scale is not None:
        scale = _vector(scale, N, np.float32, "scale")
        if not np.isfinite(scale).all():
            raise ValueError("gemm_u8s8: scale must be finite")
    if fbias is not None:
        if out_dtype != "f32" or chain is not None:
            raise ValueError('gemm_u8s8: fbias needs out_dtype="f32" and no chain')
        fbias = _vector(fbias, N, np.float32, "fbias")
    return GemmArgs(K, N, a_zero, col_sum, bias, scale, out_zero, lo, hi, chain, fbias, out_dtype)


def check_call(g: GemmArgs, a, out=None):
    """Validate what a call adds to a plan (:func:`check_plan`): the activation ``a`` and the optional ``out``."""
    check_a(a, g.K)
    if out is not None:
        if g.chain is not None:
            raise ValueError('gemm_u8s8: chain needs out_dtype="f32" and no out')
        check_out(out, a.shape[0], g.N, g.out_dtype, a)


def prepare_gemm(packed, K, N, *, a_zero=0, col_sum=None, bias=None, scale=None, out_dtype="s32", out_zero=0,
                 lo=None, hi=None, chain=None, fbias=None, path=None):
    """``plan(a, out=None)``: gemm_u8s8 with every argument but ``a`` and ``out`` checked once (a network's conv
    calls it with new activations and the same weights). The plan keeps copies of the vectors, so later changes
    to the caller's arrays do not reach it, and a weak reference to the packed array, which must live (a call
    after it was freed raises) and not change: a cache of plans keyed by the weights then lets them go."""
    g = check_plan(packed, K, N, a_zero=a_zero, col_sum=col_sum, bias=bias, scale=scale, out_dtype=out_dtype,
                   out_zero=out_zero, lo=lo, hi=hi, chain=chain, fbias=fbias)
    g = g._replace(**{k: None if v is None else np.array(v) for k, v in
                      (("col_sum", g.col_sum), ("bias", g.bias), ("scale", g.scale), ("fbias", g.fbias))})
    chain = None if chain is None else dict(chain)
    packed_ref = weakref.ref(packed)

    def plan(a, out=None):
        check_call(g, a, out)
        return _gemm(g, a, plan_packed(packed_ref), out, chain)
    return plan


def plan_packed(packed_ref):
    """The packed array a GEMM plan refers to; ValueError once it was freed."""
    packed = packed_ref()
    if packed is None:
        raise ValueError("gemm_u8s8: the plan's packed weights were freed (keep the packed array while its plan is "
                         "used)")
    return packed


def gemm_u8s8(a, packed, K, N, *, a_zero=0, col_sum=None, bias=None, scale=None, out_dtype="s32", out_zero=0,
              lo=None, hi=None, out=None, chain=None, fbias=None, path=None):
    """See the module docstring; ``path`` is accepted (and ignored) so callers can pass it to either side.

    ``chain`` (out_dtype "f32", no ``out``): ``qdirect.scalar_chain(result, **chain)``, returned as its
    ``(t or None, q or None)`` (the compiled GEMM applies it block by block, with the same bits)."""
    return prepare_gemm(packed, K, N, a_zero=a_zero, col_sum=col_sum, bias=bias, scale=scale, out_dtype=out_dtype,
                        out_zero=out_zero, lo=lo, hi=hi, chain=chain, fbias=fbias)(a, out)


def _gemm(g: GemmArgs, a, packed, out, chain):
    """The arithmetic of gemm_u8s8 on checked arguments."""
    out_dtype = g.out_dtype
    if chain is not None:
        from . import qdirect
        f = _gemm(g._replace(chain=None), a, packed, None, None)
        return qdirect.scalar_chain(f, **chain)
    w = unpack_b(packed, g.K, g.N)
    dot = a.astype(np.int64) @ w.astype(np.int64)
    offset = np.zeros(g.N, dtype=np.int64)
    if g.col_sum is not None:
        offset -= g.a_zero * g.col_sum.astype(np.int64)
    if g.bias is not None:
        offset += g.bias
    acc = (dot + offset).astype(np.int32)              # wraps modulo 2^32 like int32 arithmetic

    if out_dtype == "s32":
        result = acc
    else:
        f = acc.astype(np.float32) * g.scale
        if g.fbias is not None:
            f = f + g.fbias
        lo_f, hi_f = np.float32(g.lo), np.float32(g.hi)
        if out_dtype == "f32":
            result = np.minimum(np.maximum(f, lo_f), hi_f)
        else:
            r = np.minimum(np.maximum(np.rint(f) + np.float32(g.out_zero), lo_f), hi_f)
            result = r.astype(OUT_DTYPES[out_dtype])
    if out is None:
        return result.astype(OUT_DTYPES[out_dtype], copy=False)
    out[...] = result
    return out



def check_gemm_batch(a, b, *, a_zero=0, scale=1.0, trans_b=False, add=None):
    """The one validation of gemm_u8s8_batch's arguments (twin and compiled kernel): ``(M, K, N, a_zero, scale,
    add)``, add (or None) as a broadcast view of the output's shape (float32, strides multiples of 4, >= 0).
    a: uint8 (..., M, K) with a contiguous last axis, b: int8 (..., K, N) (or (..., N, K) with ``trans_b``), the
    same batch dims, M, K, N >= 1, strides >= 0 (transposed and broadcast views are fine: nothing is copied);
    a_zero an int in [0, 255]; scale a finite float."""
    for name, x, dtype in (("a", a, np.uint8), ("b", b, np.int8)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"gemm_u8s8_batch: {name} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != dtype:
            raise TypeError(f"gemm_u8s8_batch: {name} must be {np.dtype(dtype).name}, got {x.dtype}")
        if x.ndim < 2 or min(x.shape[-2:]) < 1 or min(x.strides, default=0) < 0:
            raise ValueError(f"gemm_u8s8_batch: {name} must be (..., rows, cols) with rows, cols >= 1 and "
                             f"non-negative strides, got shape {x.shape}, strides {x.strides}")
    m, k = a.shape[-2:]
    kb, n = (b.shape[-1], b.shape[-2]) if trans_b else b.shape[-2:]
    if a.shape[:-2] != b.shape[:-2] or kb != k or max(k, n) >= 2**31:
        raise ValueError(f"gemm_u8s8_batch: a {a.shape} and b {b.shape} (trans_b={bool(trans_b)}) do not multiply")
    if k > 1 and a.strides[-1] != 1:
        raise ValueError("gemm_u8s8_batch: the last axis of a must be contiguous")
    a_zero = check_a_zero(a_zero, 0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.number)) or not math.isfinite(scale):
        raise ValueError(f"gemm_u8s8_batch: scale must be a finite number, got {scale!r}")
    if add is not None:
        if not isinstance(add, np.ndarray) or add.dtype != np.float32:
            raise TypeError(f"gemm_u8s8_batch: add must be a float32 numpy.ndarray, got "
                            f"{getattr(add, 'dtype', type(add).__name__)}")
        shape = a.shape[:-2] + (m, n)
        if add.ndim > len(shape) or any(d not in (1, e) for d, e in zip(add.shape[::-1], shape[::-1])):
            raise ValueError(f"gemm_u8s8_batch: add {add.shape} does not broadcast to the output {shape}")
        add = np.broadcast_to(add, shape)
        if min(add.strides, default=0) < 0 or any(st % 4 for st in add.strides):
            add = np.ascontiguousarray(add)
    return m, k, n, a_zero, float(np.float32(scale)), add


def gemm_u8s8_batch(a, b, *, a_zero=0, scale=1.0, trans_b=False, add=None, path=None):
    """float32 (..., M, N): ``float32(acc) * float32(scale)`` (``+ add``, float32, broadcast), ``acc = (a - a_zero)
    @ b`` (``b^T`` with ``trans_b``) per batch item in int32 arithmetic (wrapping): independent u8 x s8 GEMMs whose
    second operand is an activation (attention's Q K^T and P V), packed per call. ``path`` as in gemm_u8s8."""
    add = check_gemm_batch(a, b, a_zero=a_zero, scale=scale, trans_b=trans_b, add=add)[-1]
    w = np.swapaxes(b, -1, -2) if trans_b else b
    acc = np.matmul(a.astype(np.int64) - int(a_zero), w.astype(np.int64)).astype(np.int32)
    out = acc.astype(np.float32) * np.float32(scale)
    return out if add is None else out + add


def check_range(x):
    """range_f32's input: a non-empty C-contiguous float32 ndarray."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"range_f32: x must be a float32 numpy.ndarray, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.size < 1 or not x.flags.c_contiguous:
        raise ValueError(f"range_f32: x must be non-empty and C-contiguous, got shape {x.shape}")


def range_f32(x, *, path=None):
    """``(min, max)`` of x as Python floats, or ``(nan, nan)`` if x holds NaN or inf (the dynamic quantizers'
    per-tensor range, one pass in the compiled kernel)."""
    check_range(x)
    lo, hi = float(x.min()), float(x.max())
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (math.nan, math.nan)
