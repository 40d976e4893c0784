"""PP-OCR (cls, PP-OCRv4 rec, PP-OCRv4 det) quantized with refquant, measured on rendered text (docs/real_models.md).

What is here, and why:

* :func:`load` imports one of the ONNX models that ship with ``rapidocr-onnxruntime`` (``refquant.import_onnx``,
  cached per process), or returns None when they are not installed.
* Data: :func:`cls_set`, :func:`rec_set`, :func:`det_set` render Pillow text (several font sizes, seeded colours
  and words; half of the cls lines rotated by 180 degrees) with :mod:`refquant.data.render`. Evaluation and
  calibration sets are the same functions with different seeds (:data:`EVAL_SEED`, :data:`CALIB_SEED`), so a
  calibration set never contains an evaluation line.
* Metrics: :func:`cls_accuracy` (orientation top-1), :func:`rec_exact_match` (CTC greedy text == the rendered
  text), :func:`det_iou` (IoU of two probability maps thresholded at 0.3, INT8 against FP32).
* :func:`quantize`: ``quant_post_static`` with :data:`QUANT_OPS` (the imported graphs hold conv2d,
  depthwise_conv2d, mul and matmul; PaddleSlim's default list lacks matmul) and optionally ``convert_to_int8``.
* :func:`qat`: quantization-aware fine-tuning from the PTQ thresholds, distilled from the FP32 model's own
  outputs on rendered training lines / pages (:data:`TRAIN_SEED`, :func:`train_feeds`); no labels needed.
* onnxruntime as the anchor: :func:`ort_session` (optionally with ``session.x64quantprecision``, which ORT's
  AVX2 u8s8 kernels need for exact results) and :func:`ort_quantize` (``quantize_static``: QDQ, per-channel s8
  weights, u8 activations, MinMax / Entropy / Percentile on the same calibration lines).
"""
from __future__ import annotations

import functools
import sys
import time
from typing import Optional, Sequence

import numpy as np

from ..data import render

#: The op types refquant quantizes in the PP-OCR graphs (weights: convs, and MatMul-with-constant = ``mul``).
QUANT_OPS = ("conv2d", "depthwise_conv2d", "mul", "matmul")
#: Seeds of the evaluation, calibration and QAT training sets (different, so no two share a rendered line).
EVAL_SEED = 10_000
CALIB_SEED = 50_000
TRAIN_SEED = 90_000
#: Probability threshold of the det IoU (PaddleOCR's ``det_db_thresh``).
DET_THRESH = 0.3


# ---- models ------------------------------------------------------------------------------------------------
def available() -> bool:
    """True when the three PP-OCR ONNX files (rapidocr-onnxruntime) and the ``onnx`` package are installed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return all(render.ppocr_model_path(k) for k in ("cls", "rec", "det"))


@functools.lru_cache(maxsize=None)
def _load(kind: str):
    from ..io.onnx import import_onnx
    return import_onnx(render.ppocr_model_path(kind))


def load(kind: str):
    """The imported refquant ``Model`` of ``"cls"``, ``"rec"`` or ``"det"`` (cached: do not modify it), or None."""
    if render.ppocr_model_path(kind) is None:
        return None
    return _load(kind)


def model_path(kind: str) -> Optional[str]:
    """Path of the ONNX file (for onnxruntime)."""
    return render.ppocr_model_path(kind)


# ---- rendered data -----------------------------------------------------------------------------------------
def _line(i: int, seed: int, rotate: bool):
    text = render.random_sentence(1 + i % 4, seed=seed + i)
    img = render.render_line(text, font_size=(20, 24, 28, 32, 40)[i % 5], seed=seed + i, rotate180=rotate)
    return text, img


def cls_set(n: int, seed: int = EVAL_SEED):
    """``(x, labels)``: n lines as a cls batch (N, 3, 48, 192); label 1 (rotated 180) on every second line."""
    labels = np.arange(n) % 2
    imgs = [_line(i, seed, bool(labels[i]))[1] for i in range(n)]
    return render.cls_input(imgs), labels.astype(np.int64)


def rec_set(n: int, seed: int = EVAL_SEED, width: int = 320):
    """``(x, texts)``: n upright lines of 1-4 words as a rec batch (N, 3, 48, width)."""
    pairs = [_line(i, seed, False) for i in range(n)]
    return render.rec_input([p[1] for p in pairs], width=width), [p[0] for p in pairs]


def det_set(n: int, seed: int = EVAL_SEED, size=(480, 320)):
    """n det inputs (each (1, 3, H, W)): pages of 6-10 lines, font sizes 16-28, seeded colours and positions."""
    out = []
    for p in range(n):
        rng = np.random.default_rng(seed + p)
        lines = [render.random_sentence(int(rng.integers(2, 6)), seed=seed + 100 * p + i)
                 for i in range(int(rng.integers(6, 11)))]
        page = render.render_page(lines, size, font_size=(16, 20, 24, 28)[p % 4], seed=seed + p,
                                  bg=tuple(int(v) for v in rng.integers(200, 256, 3)))
        out.append(render.det_input(page, limit_side_len=max(size)))
    return out


def batches(x: np.ndarray, size: int) -> list[dict]:
    """Feed dicts of ``size`` rows each (calibration data loader / evaluation batches)."""
    return [{"x": x[i:i + size]} for i in range(0, len(x), size)]


# ---- running and metrics -----------------------------------------------------------------------------------
def predict(model, feeds: Sequence[dict]) -> np.ndarray:
    """The model's (first) output over the feed dicts, concatenated along the batch axis."""
    out = model.outputs[0]
    return np.concatenate([model.run(f)[out] for f in feeds])


def cls_accuracy(probs: np.ndarray, labels) -> float:
    """Percent of lines whose argmax is the label (0: upright, 1: rotated 180)."""
    return 100.0 * float(np.mean(np.asarray(probs).argmax(1) == np.asarray(labels)))


@functools.lru_cache(maxsize=1)
def _charset():
    return render.rec_charset()


def rec_decode(probs: np.ndarray) -> list[str]:
    """CTC greedy texts (stripped) of rec probabilities (N, T, C)."""
    return [t.strip() for t, _ in render.ctc_greedy_decode(probs, _charset())]


def decode_change(probs: np.ndarray, ref_probs: np.ndarray) -> float:
    """A CTC-aware distance of two rec outputs: the mean normalized edit distance of their greedy decodes plus
    1e-3 x the fraction of time steps whose argmax differs (it orders variants that decode alike)."""
    from difflib import SequenceMatcher
    a, b = rec_decode(probs), rec_decode(ref_probs)
    edits = np.mean([1.0 - SequenceMatcher(None, x, y, autojunk=False).ratio() for x, y in zip(a, b)])
    frames = np.mean(np.asarray(probs).argmax(-1) != np.asarray(ref_probs).argmax(-1))
    return float(edits + 1e-3 * frames)


def rec_exact_match(probs: np.ndarray, texts) -> float:
    """Percent of lines decoded exactly as rendered."""
    return 100.0 * float(np.mean([d == t for d, t in zip(rec_decode(probs), texts)]))


def char_confusions(decoded: Sequence[str], texts: Sequence[str]) -> dict:
    """``Counter({(truth, read): count})`` of the character edits turning each text into its decoded string.

    Aligned with :class:`difflib.SequenceMatcher`: a substitution pairs characters position by position (the
    longer side's extra characters become deletions / insertions), a deleted character reads as ``""``, an
    inserted one has truth ``""``."""
    from collections import Counter
    from difflib import SequenceMatcher
    out: Counter = Counter()
    for read, truth in zip(decoded, texts):
        for tag, i0, i1, j0, j1 in SequenceMatcher(None, truth, read, autojunk=False).get_opcodes():
            if tag == "equal":
                continue
            a, b = truth[i0:i1], read[j0:j1]
            n = max(len(a), len(b))
            for k in range(n):
                out[(a[k] if k < len(a) else "", b[k] if k < len(b) else "")] += 1
    return out


def _loose(text: str) -> str:
    import unicodedata
    return unicodedata.normalize("NFKC", text).replace(" ", "")


def rec_report(probs: np.ndarray, texts: Sequence[str], fp32_probs: Optional[np.ndarray] = None) -> dict:
    """Exact match and the character errors of rec probabilities against the rendered texts.

    ``{"exact": %, "exact_loose": % (spaces ignored and NFKC-normalized, so a full-width ``）`` reads as ``)``:
    the Chinese-trained model often drops spaces and picks the full-width forms),
    "lines_wrong": [indices], "confusions": Counter((truth, read) -> n)}``; with ``fp32_probs``
    also ``"new_confusions"``: the errors this model makes beyond FP32's (Counter subtraction), i.e. what
    quantization confuses that the float model does not, ``"lines_lost"``: lines FP32 reads right and this
    model does not, and ``"agree"``: % of lines decoded exactly as FP32 decodes them (the quantization damage
    alone, also on sets where FP32 itself misreads lines)."""
    read = rec_decode(probs)
    wrong = [i for i, (d, t) in enumerate(zip(read, texts)) if d != t]
    loose = np.mean([_loose(d) == _loose(t) for d, t in zip(read, texts)]) if texts else 1.0
    out = {"exact": 100.0 * (1 - len(wrong) / max(len(texts), 1)), "exact_loose": 100.0 * float(loose),
           "lines_wrong": wrong,
           "confusions": char_confusions(read, texts)}
    if fp32_probs is not None:
        ref = rec_decode(fp32_probs)
        out["new_confusions"] = out["confusions"] - char_confusions(ref, texts)
        out["lines_lost"] = [i for i in wrong if ref[i] == texts[i]]
        out["agree"] = 100.0 * float(np.mean([d == r for d, r in zip(read, ref)])) if texts else 100.0
    return out


def format_confusions(confusions, top: int = 8) -> str:
    """``'0'->'O' x3, '.'->'' x2, ...``: the ``top`` most frequent character edits."""
    return ", ".join(f"{a!r}->{b!r} x{n}" for (a, b), n in confusions.most_common(top)) or "-"


def det_iou(prob: np.ndarray, ref: np.ndarray, thresh: float = DET_THRESH) -> float:
    """IoU of ``prob > thresh`` and ``ref > thresh`` (1.0 when both are empty)."""
    a, b = np.asarray(prob) > thresh, np.asarray(ref) > thresh
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# ---- quantization ------------------------------------------------------------------------------------------
def quantize(model, calib_feeds, algo: str = "hist", *, skip_tensor_list=None, int8: bool = True, **kwargs):
    """Static PTQ of an imported PP-OCR model with :data:`QUANT_OPS`; returns ``(fake_quant, int8_or_None)``.

    ``kwargs`` go to ``quant_post_static`` (e.g. ``calibration=``, ``hist_percent=``)."""
    from ..deploy import convert_to_int8
    from ..quant.post_static import quant_post_static
    q = quant_post_static(model, calib_feeds, algo=algo, quantizable_op_type=QUANT_OPS,
                          skip_tensor_list=skip_tensor_list, **kwargs)
    return q, (convert_to_int8(q) if int8 else None)


def recipe(model, calib_feeds, *, int8: bool = True, quantizable_op_type=QUANT_OPS, **options):
    """:func:`refquant.quant.recipe.quant_post_recipe` with the PP-OCR op types; ``(fake_quant, int8_or_None)``.

    Everything is chosen from ``calib_feeds`` (its last quarter held out): smoothing per layer, the calibration
    algorithm per tensor, optionally float ops (``max_skip``, ``budget``, ``distance``, e.g. :func:`decode_change`).
    ``options`` go to ``quant_post_recipe``."""
    from ..deploy import convert_to_int8
    from ..quant.recipe import quant_post_recipe
    q = quant_post_recipe(model, calib_feeds, quantizable_op_type=quantizable_op_type, **options)
    return q, (convert_to_int8(q) if int8 else None)


def train_feeds(kind: str, n: int, batch: int, seed: int = TRAIN_SEED) -> list[dict]:
    """QAT training feeds: ``n`` rendered lines (cls, rec) or pages (det, one per feed) at ``seed``."""
    if kind == "det":
        return [{"x": x} for x in det_set(n, seed)]
    return batches((cls_set if kind == "cls" else rec_set)(n, seed)[0], batch)


def distill_loss(student: np.ndarray, teacher: np.ndarray, loss: str):
    """``(L, dL/dstudent)`` of the student's output against the FP32 teacher's (both probabilities).

    ``"kl"`` (softmax outputs, cls and rec): KL(p_t || p_s) over the last axis, averaged over the R rows (lines,
    or lines x time steps): ``L = 1/R sum_r sum_c p_t (log p_t - log p_s)``, ``dL/dp_s = -p_t / (R p_s)`` (through
    the softmax this is ``(p_s - p_t) / R`` on the logits). ``"mse"`` (det's sigmoid probability map):
    ``L = mean((p_s - p_t)^2)``, ``dL/dp_s = 2 (p_s - p_t) / size``."""
    s = np.asarray(student, np.float64)
    t = np.asarray(teacher, np.float64)
    if loss == "mse":
        d = s - t
        return float(np.mean(d * d)), (2.0 * d / d.size).astype(student.dtype)
    if loss != "kl":
        raise ValueError(f"distill_loss: loss must be 'kl' or 'mse', got {loss!r}")
    rows = s.size // s.shape[-1]
    s = np.maximum(s, 1e-12)
    kl = np.sum(t * (np.log(np.maximum(t, 1e-12)) - np.log(s))) / rows
    return float(kl), (-t / (rows * s)).astype(student.dtype)


def qat(model, calib_feeds, train_feeds, *, algo: str = "hist", steps: int = 100, lr: float = 1e-4,
        optimizer: str = "adam", warmup: int = 10, teacher=None, loss: Optional[str] = None,
        freeze_thresholds: bool = True, reduce_range: bool = False, seed: int = 0, int8: bool = True,
        log_every: int = 0):
    """Quantization-aware fine-tuning of an imported PP-OCR model; returns ``(fake_quant, int8_or_None)``.

    1. Static PTQ with ``algo`` on ``calib_feeds`` gives the starting activation thresholds (``init_thresholds``);
       ``algo="recipe"``: :func:`recipe`'s smoothed model and thresholds (QAT trains the smoothed weights).
    2. :func:`refquant.quant.quant_aware` with :data:`QUANT_OPS` (every op PTQ quantizes, no skip list); the
       batch norms get ``use_global_stats`` (the imported graphs are inference graphs: their running statistics
       are kept as a fixed per-channel affine map, whose scale and shift train with the conv weights and biases;
       batch statistics of 1-8 rendered samples would be far from the imported ones and change the very function
       being distilled). ``freeze_thresholds`` (default) keeps the PTQ activation thresholds (``for_test``), so
       only the weights move; False lets the moving average update them from the training batches.
    3. ``steps`` optimizer steps (``optimizer`` Adam by default, ``lr`` with ``warmup`` linear steps then cosine
       decay), cycling through ``train_feeds`` in a seeded order, on the distillation loss :func:`distill_loss`
       between the student's output and ``teacher``'s (default: ``model`` itself in FP32) on the same feed:
       ``loss`` "kl" for a softmax output (cls, rec), "mse" for det's sigmoid map (default: from the output op).
    4. :func:`refquant.quant.convert` (the graph format of ``quant_post_static``) and ``convert_to_int8``.

    ``reduce_range``: the GEMM weights train on the grid ``convert_to_int8(reduce_range=True)`` deploys (QAT config
    ``weight_reduce_range``), and the INT8 graph is converted so (AVX2's faster exact kernel).

    ``meta["quantization"]["qat"]`` of the result records the recipe, the loss per step and the seconds.
    """
    from ..deploy import convert_to_int8
    from ..executor import backward, forward
    from ..quant.post_static import thresholds
    from ..quant.qat import convert, quant_aware
    from ..train import make_optimizer, make_schedule

    t_start = time.perf_counter()
    out = model.outputs[0]
    if loss is None:
        producer = next(op.type for op in model.ops if out in op.outputs)
        loss = "kl" if producer == "softmax" else "mse"
    if algo == "recipe":
        from ..quant.recipe import quant_post_recipe
        ptq, start = quant_post_recipe(model, calib_feeds, quantizable_op_type=QUANT_OPS, with_float=True)
    else:
        (ptq, _), start = quantize(model, calib_feeds, algo, int8=False), model
    student = quant_aware(start, {"quantize_op_types": list(QUANT_OPS), "weight_reduce_range": reduce_range},
                          for_test=freeze_thresholds, init_thresholds=thresholds(ptq))
    bns = [op for op in student.ops if op.type == "batch_norm"]
    for op in bns:
        op.attrs["use_global_stats"] = True
    targets = [(teacher or model).run(f)[out] for f in train_feeds]
    opt = make_optimizer(optimizer, student, lr)
    sched = make_schedule("cosine", lr, max(1, steps), min(warmup, steps // 2))
    rng = np.random.default_rng(seed)
    order: list[int] = []
    history = []
    for step in range(int(steps)):
        if not order:
            order = list(rng.permutation(len(train_feeds)))
        i = int(order.pop())
        env, tape = forward(student, train_feeds[i], training=True, record=True)
        value, grad = distill_loss(env[out], targets[i], loss)
        if not np.isfinite(value):
            raise FloatingPointError(f"qat: loss {value} at step {step}; lower lr ({lr})")
        grads = backward(student, env, tape, {out: grad})
        opt.step(grads, lr=sched(step))
        history.append(value)
        del env, tape, grads
        if log_every and (step + 1) % log_every == 0:
            print(f"qat step {step + 1}/{steps} loss {np.mean(history[-log_every:]):.4g} "
                  f"{time.perf_counter() - t_start:.0f}s", file=sys.stderr, flush=True)
    for op in bns:
        del op.attrs["use_global_stats"]
    q = convert(student)
    q.meta["quantization"]["qat"] = {"init_algo": algo, "steps": int(steps), "lr": lr, "optimizer": optimizer,
                                     "loss": loss, "freeze_thresholds": freeze_thresholds,
                                     "reduce_range": reduce_range,
                                     "n_train_feeds": len(train_feeds), "loss_history": history,
                                     "seconds": time.perf_counter() - t_start}
    return q, (convert_to_int8(q, reduce_range=reduce_range) if int8 else None)


# ---- onnxruntime -------------------------------------------------------------------------------------------
def ort_session(path_or_bytes, threads: int = 1, x64quantprecision: bool = False):
    """An onnxruntime CPU session at ``threads`` intra-op threads. ``x64quantprecision``: set
    ``session.x64quantprecision = 1`` (exact u8s8 products on AVX2 instead of the saturating vpmaddubsw path)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3  # the PP-OCR files carry unused initializers: ORT warns about each one
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if x64quantprecision:
        so.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def ort_predict(sess, feeds: Sequence[dict]) -> np.ndarray:
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def ort_quantize(fp32_path: str, out_path: str, calib_feeds: Sequence[dict], method: str = "MinMax") -> str:
    """onnxruntime ``quantize_static`` (QDQ, per-channel s8 weights, u8 activations) calibrated on the same feed
    dicts; ``method`` is MinMax, Entropy or Percentile. Returns ``out_path``."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(list(calib_feeds))

        def get_next(self):
            return next(self.it, None)

    ort.set_default_logger_severity(3)
    quantize_static(fp32_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method))
    return out_path
