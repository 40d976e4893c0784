"""Teaching figures drawn from real runs: ``refquant plot KIND --out FILE.png`` (docs/concepts.md shows them).

Every figure except the GEMM diagram runs refquant's public API on a real model and plots what it returned;
``quick=True`` uses less data and fewer training steps (the tests draw every figure that way). matplotlib is an
optional dependency (``pip install 'refquant[plot]'``); figures are drawn on the Agg canvas, without pyplot.

KINDS: ``thresholds`` (a real layer's |x| histogram with every calibration algorithm's threshold), ``kl`` (the KL
search's divergence curve), ``search`` (the mse and emd losses of their candidate thresholds), ``qat`` (activation
threshold trajectories of the three QAT activation quantizers over real training steps), ``perchannel``
(per-channel vs per-tensor weight steps of a depthwise layer), ``sqnr`` (per-layer SQNR and the sensitivity ranking
behind ``auto_skip``), ``bits`` (top-1 vs bits, PTQ and QAT), ``gemm`` (the INT8 GEMM's data flow).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import RefquantError

COLORS = dict(KL="tab:blue", hist="tab:orange", avg="tab:green", abs_max="tab:red", mse="tab:purple",
              emd="tab:brown")
# The PP-OCR recognizer's depthwise 3x3 on 64 channels (p2o.Conv.7), one of its two most sensitive ops
# (docs/real_models.md); its input is the activation the calibration figures use.
PPOCR_LAYER = ("rec", "p2o.Conv.7")
ZOO_LAYER = ("mobilenet_v1", 3)  # fallback: the zoo model and the index of the quantizable op whose input is used


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    """A Figure on the Agg canvas and its axes (no pyplot: no global state, no display needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RefquantError("refquant plot needs matplotlib: pip install 'refquant[plot]'") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    return fig, (axes[0] if axes.size == 1 else list(axes))


# ---- data: one real activation tensor, in calibration batches ----

@lru_cache(maxsize=2)
def layer_activation(quick: bool = False) -> tuple[str, list[dict], str]:
    """``(tensor name, [{name: batch}, ...], source)``: the input of PP-OCR rec's ``p2o.Conv.7`` on rendered
    calibration lines, or, without ``rapidocr-onnxruntime``, the input of a zoo MobileNetV1 layer on digits."""
    from .realmodels import ppocr
    if ppocr.available():
        kind, op_name = PPOCR_LAYER
        model = ppocr.load(kind)
        name = next(op.inputs[0] for op in model.ops if op.name == op_name)
        x, _ = ppocr.rec_set(4 if quick else 16, seed=ppocr.CALIB_SEED)
        feeds = ppocr.batches(x, 4)
        source = f"PP-OCRv4 rec, input of {op_name} (depthwise 3x3, 64 channels), {len(x)} rendered lines"
    else:
        from .models import zoo
        from .models.pretrained import pretrained
        from .quant.sensitivity import quantized_ops
        zoo_name, k = ZOO_LAYER
        model = pretrained(zoo_name, progress=False)
        op_name = quantized_ops(model)[k][0]
        name = next(op.inputs[0] for op in model.ops if op.name == op_name)
        feeds = zoo.calibration_feeds(zoo_name, model.inputs[0], 32, 2 if quick else 8)
        source = (f"zoo {zoo_name}, input of {op_name}, {32 * len(feeds)} digits "
                  "(PP-OCR not installed: pip install rapidocr-onnxruntime)")
    batches = [{name: model.run(f, outputs=[name])[name]} for f in feeds]
    return name, batches, source


def _thresholds(name: str, batches: list[dict]) -> dict:
    from .calibration import calibrate, static_algorithms
    return {algo: float(calibrate(batches, algo).thresholds[name]) for algo in static_algorithms()}


def _mark_thresholds(ax, ts: dict, styles=("-", "--", ":", "-.")):
    for k, (algo, t) in enumerate(sorted(ts.items(), key=lambda kv: kv[1])):
        ax.axvline(t, color=COLORS.get(algo), ls=styles[k % len(styles)], lw=1.5, label=f"{algo}: T = {t:.3g}")


# ---- the figures ----

def fig_thresholds(quick: bool = False):
    """(1) The |x| histogram of a real layer's input with every calibration algorithm's threshold T."""
    from .calibration import calibrate
    name, batches, source = layer_activation(quick)
    kl = calibrate(batches, "KL").observers[name]
    ts = _thresholds(name, batches)
    hist, width = kl.hist, float(kl.bin_width)
    group = 8  # 2048 bins drawn as 256
    h = hist.reshape(-1, group).sum(axis=1)
    edges = kl.edges[::group]
    fig, ax = _figure(7.5, 3.6)
    ax.stairs(h, edges, fill=True, color="0.75", label="|x| histogram (2048 bins, drawn as 256)")
    ax.set_yscale("log")
    _mark_thresholds(ax, ts)
    ax.set_xlabel("|x|")
    ax.set_ylabel("count")
    ax.set_title(f"Calibration thresholds on one real tensor\n{source}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.text(0.01, 0.02, f"bin width {width:.3g}; values above T are clipped, below it rounded to steps of T/127",
            transform=ax.transAxes, fontsize=7)
    return fig


def fig_kl(quick: bool = False):
    """(2) The KL divergence of every candidate threshold the KL search scores; the minimum is KL's T."""
    from .calibration import calibrate, kl_curve
    name, batches, source = layer_activation(quick)
    obs = calibrate(batches, "KL").observers[name]
    curve = kl_curve(obs.hist)
    width = float(obs.bin_width)
    t = np.array([(i + 0.5) * width for i, _ in curve])
    d = np.array([v for _, v in curve])
    best = int(np.argmin(d))  # the first strict minimum, as cal_kl_threshold
    T = float(obs.threshold())
    fig, ax = _figure(7.5, 3.4)
    ax.plot(t, d, color="tab:blue", lw=1)
    ax.plot([t[best]], [d[best]], "o", color="tab:red",
            label=f"minimum: T = {t[best]:.4g} (cal_kl_threshold: {T:.4g})")
    ax.set_xlabel("candidate threshold T = (i + 0.5) x bin width")
    ax.set_ylabel("KL(P || Q)")
    ax.set_title(f"KL search: {len(curve)} candidate lengths i of 2048 bins\n{source}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def fig_search(quick: bool = False):
    """(3) mse and emd: the loss of each of the 35 candidates ``s * max|x|`` per batch; the best is marked."""
    from .calibration import calibrate, stats
    from .reference.search import candidate_scales
    name, batches, source = layer_activation(quick)
    fig, axes = _figure(8.5, 3.4, ncols=2)
    for ax, loss in zip(axes, ("mse", "emd")):
        T = float(calibrate(batches, loss).thresholds[name])
        for k, b in enumerate(batches):
            x = np.ascontiguousarray(b[name], dtype=np.float32).ravel()
            scales = candidate_scales(float(np.abs(x).max()))
            losses = stats.scan_losses(x, scales, 8, False, loss)
            ax.plot(scales, losses, lw=1, marker=".", ms=3, label=f"batch {k + 1}" if k < 4 else None)
        ax.axvline(T, color="tab:red", ls="--", label=f"chosen T = {T:.3g}")
        ax.set_xlabel("candidate c = s max|x|, s = 0.30 .. 0.98")
        ax.set_ylabel(f"{loss} loss")
        ax.set_title(f"{loss}: clipping error (left) vs rounding error (right)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(source, fontsize=8)
    return fig


def qat_trajectories(quick: bool = False) -> tuple[str, dict, np.ndarray]:
    """Train zoo LeNet-5 under ``quant_aware`` with each activation quantizer and record, after every step, the
    threshold of one activation: ``(tensor, {type: T per step})``. abs_max keeps no state: its T is the step's
    batch max|x|, read from a forward pass of the weights the step starts from (upstream quantizers are abs_max
    too, so that pass sees what training sees)."""
    from .models import zoo
    from .models.pretrained import pretrained
    from .quant import quant_aware
    from .train import fit, make_optimizer
    name, steps, batch = "pool2d_0.tmp_0", (15 if quick else 150), 32
    x, y = zoo.load_data("lenet5", "train")
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(-(-steps * batch // len(x)))])
    out = {}
    for qtype in ("moving_average_abs_max", "range_abs_max", "abs_max"):
        qat = quant_aware(pretrained("lenet5", progress=False), {"activation_quantize_type": qtype,
                                                                 "window_size": 20})
        opt = make_optimizer("sgd", qat, 0.005, momentum=0.9)
        ts = []
        for s in range(steps):
            idx = order[s * batch:(s + 1) * batch]
            if qtype == "abs_max":
                ts.append(float(np.abs(qat.run({"x": x[idx]}, outputs=[name])[name]).max()))
            fit(qat, x[idx], y[idx], epochs=1, batch_size=batch, optimizer=opt, schedule=None, progress=False)
            if qtype != "abs_max":
                ts.append(float(np.asarray(qat.params[f"{name}@scale"]).ravel()[0]))
        out[qtype] = np.array(ts)
    return name, out


def fig_qat(quick: bool = False):
    """(4) QAT activation thresholds over real training steps: moving average vs range (window 20) vs abs_max."""
    name, traj = qat_trajectories(quick)
    steps = np.arange(1, len(traj["abs_max"]) + 1)
    fig, ax = _figure(7.5, 3.4)
    ax.plot(steps, traj["abs_max"], color="0.55", lw=0.8, marker=".", ms=3, label="abs_max (the batch's max|x|)")
    ax.plot(steps, traj["range_abs_max"], color="tab:orange", lw=1.6, label="range_abs_max")
    ax.plot(steps, traj["moving_average_abs_max"], color="tab:blue", lw=1.6, label="moving_average_abs_max")
    ax.set_xlabel("training step (batch 32, SGD lr 0.005)")
    ax.set_ylabel("activation threshold T")
    ax.set_title(f"QAT activation thresholds of zoo LeNet-5's {name} (moving_rate 0.9, window_size 20)",
                 fontsize=9)
    ax.legend(fontsize=7)
    return fig


def fig_perchannel(quick: bool = False):
    """(5) A depthwise layer's per-channel max|w|: one per-tensor step for all channels vs one step each."""
    from .calibration import weight_threshold
    from .models.pretrained import pretrained
    from .quant.report import sqnr_db
    model = pretrained("mobilenet_v1", progress=False)
    op = next(o for o in model.ops if o.type == "depthwise_conv2d")
    w = np.asarray(model.params[op.inputs[1]], dtype=np.float32)
    tc = np.asarray(weight_threshold(w, "depthwise_conv2d"), dtype=np.float32)
    tt = float(np.asarray(weight_threshold(w, "depthwise_conv2d", "abs_max")).ravel()[0])
    tcv = tc.reshape(-1, *([1] * (w.ndim - 1)))
    per_tensor = np.round(w / tt * 127) * tt / 127  # nothing clips: T = max|w| in both cases
    per_channel = np.round(w / tcv * 127) * tcv / 127
    snr_t = [sqnr_db(w[c], per_tensor[c]) for c in range(len(tc))]
    snr_c = [sqnr_db(w[c], per_channel[c]) for c in range(len(tc))]
    ch = np.arange(len(tc))
    fig, (a, b) = _figure(8.5, 3.4, ncols=2)
    a.bar(ch, tc, color="tab:blue", label="per-channel T_c = max|w_c| (step T_c / 127)")
    a.axhline(tt, color="tab:red", ls="--", label=f"per-tensor T = {tt:.3g} (step {tt / 127:.2g})")
    a.set_xlabel("output channel")
    a.set_ylabel("max |w|")
    a.set_ylim(0, 1.3 * tt)
    a.legend(fontsize=7, loc="upper left")
    a.set_title(f"zoo MobileNetV1 {op.name} ({op.type}, {w.shape[0]} channels)", fontsize=9)
    b.plot(ch, snr_c, "o", ms=4, color="tab:blue", label="per-channel steps")
    b.plot(ch, snr_t, "s", ms=4, color="tab:red", label="one per-tensor step")
    b.set_xlabel("output channel")
    a.set_xticks(ch[::2])
    b.set_xticks(ch[::2])
    b.set_ylabel("weight SQNR, dB (8 bits)")
    b.legend(fontsize=7)
    b.set_title("each channel's weights after quantize-dequantize", fontsize=9)
    return fig


def fig_sqnr(quick: bool = False):
    """(6) Per-layer output SQNR of a KL-quantized zoo MobileNetV1 (``layer_report``) and the per-op sensitivity
    ranking (``sensitivity``, mode "only") whose top k ``auto_skip`` keeps float. ``quick``: zoo LeNet-5."""
    from .models import zoo
    from .models.pretrained import pretrained
    from .quant import quant_post_static
    from .quant.report import layer_report
    from .quant.sensitivity import auto_skip, sensitivity
    name = "lenet5" if quick else "mobilenet_v1"
    model = pretrained(name, progress=False)
    feeds = zoo.calibration_feeds(name, model.inputs[0], 32, 2 if quick else 10)
    xt, _ = zoo.load_data(name, "test")
    evals = [{model.inputs[0]: xt[i:i + 64]} for i in range(0, 64 if quick else 256, 64)]
    q = quant_post_static(model, feeds, algo="KL")
    rows = layer_report(model, q, evals)
    ranking = sensitivity(model, feeds, eval_feeds=evals, algo="KL")
    skip_ops = {n for n, _ in ranking[:2]}
    assert len(auto_skip(model, feeds, 2, ranking=ranking)) == 2
    fig, (a, b) = _figure(9.5, 3.8, ncols=2)
    k = np.arange(len(rows))
    a.bar(k, [r["output_sqnr_db"] for r in rows], color="tab:blue", label="output SQNR")
    a.plot(k, [r["sqnr_db"] for r in rows], "_", color="tab:red", ms=8, mew=2, label="input SQNR")
    a.set_xticks(k, [r["op"] for r in rows], rotation=90, fontsize=6)
    a.set_ylabel("SQNR, dB")
    a.legend(fontsize=7)
    a.set_title(f"layer_report: KL, 8 bits, zoo {name} (graph order)", fontsize=9)
    names = [n for n, _ in ranking]
    b.bar(np.arange(len(ranking)), [s for _, s in ranking],
          color=["tab:red" if n in skip_ops else "tab:gray" for n in names])
    b.set_xticks(np.arange(len(ranking)), names, rotation=90, fontsize=6)
    b.set_yscale("log")
    b.set_ylabel("relative output error, only this op quantized")
    b.set_title("sensitivity ranking, worst first (red: auto_skip k=2)", fontsize=9)
    return fig


def accuracy_vs_bits(quick: bool = False) -> dict:
    """Test top-1 of the zoo MobileNetV1: FP32, static PTQ (KL) and QAT (``finetune_zoo``, the zoo recipe; a
    model the recipe cached in data/zoo is read instead of fine-tuned again) at 8, 6 and 4 bits.
    ``quick``: zoo LeNet-5, and QAT is ``quant_aware`` from the PTQ thresholds, one epoch on 320 images."""
    from .io import load
    from .models import zoo
    from .models.pretrained import cached_path, finetune_zoo, pretrained
    from .quant import convert, quant_aware, quant_post_static, thresholds
    from .train import evaluate, fit
    name = "lenet5" if quick else "mobilenet_v1"
    model = pretrained(name, progress=False)
    xt, yt = zoo.load_data(name, "test")
    feeds = zoo.calibration_feeds(name, model.inputs[0], 32, 2 if quick else 10)
    res = {"name": name, "bits": [8, 6, 4], "fp32": 100 * evaluate(model, xt, yt), "ptq": [], "qat": []}
    for bits in res["bits"]:
        q = quant_post_static(model, feeds, algo="KL", weight_bits=bits, activation_bits=bits)
        res["ptq"].append(100 * evaluate(q, xt, yt))
        if quick:
            x, y = (a[:320] for a in zoo.load_data(name, "train"))
            qat = quant_aware(model, {"weight_bits": bits, "activation_bits": bits}, init_thresholds=thresholds(q))
            fit(qat, x, y, epochs=1, lr=0.005, progress=False)
            qat = convert(qat)
        else:
            path = cached_path(name, f".qat{bits}")
            qat = load(path) if path is not None else finetune_zoo(name, bits)[0]
        res["qat"].append(100 * evaluate(qat, xt, yt))
    return res


def fig_bits(quick: bool = False):
    """(7) Accuracy vs bits for static PTQ (KL) and QAT on the zoo MobileNetV1 (``quick``: LeNet-5)."""
    res = accuracy_vs_bits(quick)
    fig, ax = _figure(6.0, 3.4)
    ax.axhline(res["fp32"], color="0.5", ls="--", label=f"FP32 {res['fp32']:.2f}%")
    ax.plot(res["bits"], res["ptq"], "o-", color="tab:blue", label="static PTQ (KL)")
    ax.plot(res["bits"], res["qat"], "s-", color="tab:green", label="QAT (finetune_zoo)")
    for b, p, q in zip(res["bits"], res["ptq"], res["qat"]):
        ax.annotate(f"{p:.1f}", (b, p), textcoords="offset points", xytext=(6, -10), fontsize=7)
        ax.annotate(f"{q:.1f}", (b, q), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xticks(res["bits"])
    ax.invert_xaxis()
    ax.set_xlabel("weight and activation bits")
    ax.set_ylabel("test top-1, %")
    ax.set_title(f"zoo {res['name']} on the UCI digits test split", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def fig_gemm(quick: bool = False):
    """(8) The INT8 GEMM's data flow (docs/int8_kernels.md): s8 activations shifted to u8, weights packed once
    with their column sums, int32 accumulation, the correction, and the requantizing epilogue."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    fig, ax = _figure(10.0, 4.6)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 50)
    ax.axis("off")

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.6", fc=color, ec="0.3", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=7.5)

    def arrow(p, q, text=None, at=None):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="0.2"))
        if text:
            x, y = at or ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2 + 1.2)
            ax.text(x, y, text, ha="center", fontsize=6.5, color="0.2")

    box(2, 38, 20, 8, "activations x (float)\nq = rint(x / step_x)\ns8 [-127, 127]", "#dbe9f6")
    box(30, 38, 20, 8, "a = q + 128\nu8 [1, 255]\n(M, K) rows", "#dbe9f6")
    box(2, 6, 20, 9, "weights w (float), (K, N)\nq_w = rint(w / step_w[n])\nstep_w[n] = T_n / 127, s8", "#fbe3d6")
    box(30, 2, 20, 17, "pack_b (once per layer)\n16-column panels,\nK in groups of 4:\n"
        "byte 4c+i = q_w[4g+i, 16p+c]\n+ col_sum[n] = sum_k q_w[k, n]", "#fbe3d6")
    box(58, 20, 18, 14, "int32 accumulators\nacc[m, n] =\nsum_k a[m, k] q_w[k, n]\n"
        "vpmaddwd (AVX2)\nvpdpbusd (VNNI) / sdot", "#e2f0d9")
    box(58, 2, 18, 10, "offset[n] =\nbias[n] - 128 col_sum[n]\n(folded once)", "#e2f0d9")
    box(82, 20, 16, 14, "epilogue (registers)\nfloat32(acc + offset)\nx M[n]\n"
        "rint, + zero, clamp\n-> u8 / s8 / f32", "#fff2cc")
    arrow((24.5, 42), (29, 42), "+128")
    arrow((24.5, 10.5), (29, 10.5), "reorder")
    arrow((52.5, 42), (59, 34.5), "4 bytes of K", at=(60, 40))
    arrow((52.5, 15), (59, 24), "64-byte group", at=(53, 21))
    arrow((52.5, 6), (57, 6), "col_sum")
    arrow((67, 12.6), (67, 19.2))
    arrow((77.5, 27), (81, 27))
    ax.text(2, 27, "sum_k q q_w = sum_k (q + 128) q_w - 128 col_sum:\nthe shift is undone exactly by one\n"
            "per-column int32 term, so u8 x s8\ninstructions compute the s8 x s8 product.\n"
            "M[n] = step_x step_w[n] / step_y\n(the requantization multiplier)", fontsize=7, va="center",
            bbox=dict(fc="white", ec="0.6", boxstyle="round"))
    ax.set_title("INT8 GEMM (qgemm.gemm_u8s8): u8 activations x packed s8 weights -> int32 -> requantize",
                 fontsize=9)
    return fig


KINDS = {"thresholds": fig_thresholds, "kl": fig_kl, "search": fig_search, "qat": fig_qat,
         "perchannel": fig_perchannel, "sqnr": fig_sqnr, "bits": fig_bits, "gemm": fig_gemm}


def save_figure(kind: str, out, *, quick: bool = False, dpi: int | None = None) -> None:
    """Draw figure ``kind`` and write it as PNG to ``out`` (dpi 100, or 50 with ``quick``)."""
    if kind not in KINDS:
        raise KeyError(f"unknown figure {kind!r}; choose from {', '.join(KINDS)}")
    _figure(1, 1)  # matplotlib missing: say so before any computation
    fig = KINDS[kind](quick=quick)
    fig.savefig(out, format="png", dpi=dpi or (50 if quick else 100))
