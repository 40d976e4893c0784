"""Single INT8 conv layers, refquant vs onnxruntime QLinearConv vs torch quantized conv, side by side.

Cases (batch 1; GOPS = 2 * MACs / s): 3x3 conv 64->64 at 56x56, 1x1 conv 256->64 at 56x56, depthwise 3x3 32 ch at
112x112 and 144 ch stride 2 at 56x56, first conv 3->32 stride 2 at 224x224, and 1x1 32->64 at 112x112. refquant
runs its ``conv2d_int8`` / ``depthwise_conv2d_int8`` ops (u8 NHWC in, u8 out, requantized per channel), ORT a
QLinearConv (u8 NCHW activations, per-channel s8 weights), torch ``torch.ao.nn.quantized.Conv2d`` (quint8 NCHW
input, per-channel qint8 weights) under its ``x86`` and ``onednn`` engines. FP32 references: refquant's ``conv2d``
/ ``depthwise_conv2d`` op and ORT's Conv. Peers that are not installed are skipped (``pip install onnxruntime``;
torch: ``pip install torch==2.13.0``). Medians of round-robin bursts of calls (``bench_layers_direct.round_robin_bursts``); each row
names the route and ISA path refquant INT8 took (depthwise / small-K direct kernel / im2col + GEMM).
"""
from __future__ import annotations

import warnings

import numpy as np

from .bench_layers_direct import round_robin_bursts
from .common import machine, table

# name, cin, cout, h, kernel, stride, pad, depthwise
CASES = [("conv3x3 64->64 @56", 64, 64, 56, 3, 1, 1, False),
         ("conv1x1 256->64 @56", 256, 64, 56, 1, 1, 0, False),
         ("depthwise3x3 32 @112", 32, 32, 112, 3, 1, 1, True),
         ("depthwise3x3 144 s2 @56", 144, 144, 56, 3, 2, 1, True),
         ("conv1x1 32->64 @112", 32, 64, 112, 1, 1, 0, False),
         ("conv3x3 3->32 s2 @224", 3, 32, 224, 3, 2, 1, False)]


def _refquant_int8(cin, cout, h, k, s, p, dw, rng):
    from refquant.ops import OpContext, get_op
    from refquant.reference import qgemm
    x = rng.integers(0, 256, (1, h, h, cin), dtype=np.uint8)
    mult = np.full(cout, 1e-3, np.float32)
    bias = rng.integers(-1000, 1000, cout).astype(np.int32)
    attrs = {"strides": [s, s], "paddings": [p] * 4, "dilations": [1, 1], "a_zero": 0, "out_dtype": "u8",
             "out_zero": 0, "lo": 0, "hi": 255}
    if dw:
        w = rng.integers(-127, 128, (k, k, cout), dtype=np.int8)
        op = get_op("depthwise_conv2d_int8")
        return lambda: op.forward(OpContext(), attrs, x, w, bias, mult)
    w = rng.integers(-127, 128, (k * k * cin, cout), dtype=np.int8)
    packed, col_sum = qgemm.pack_b(w), qgemm.col_sums(w)
    attrs.update(ksize=[k, k], K=k * k * cin, N=cout)
    op = get_op("conv2d_int8")
    return lambda: op.forward(OpContext(), attrs, x, packed, col_sum, bias, mult)


def _route(cin, k, s, p, dw):
    """Which refquant INT8 kernel runs the layer (conv2d_int8's dispatch), with its ISA path."""
    from refquant._dispatch import kernel
    from refquant.reference.qdirect import MAX_SMALL_K
    direct, gemm = kernel("qdirect"), kernel("qgemm")
    path = getattr(direct, "current_path", lambda: "numpy")()
    if dw:
        return f"depthwise {path}"
    if k * k * cin <= MAX_SMALL_K and k * cin <= 16 and not (k == 1 and s == 1 and p == 0):
        return f"small-K direct {path}"
    return f"GEMM {getattr(gemm, 'current_path', lambda: 'numpy')()}"


def _refquant_fp32(cin, cout, h, k, s, p, dw, rng):
    from refquant.ops import OpContext, get_op
    x = rng.standard_normal((1, cin, h, h)).astype(np.float32)
    w = rng.standard_normal((cout, 1 if dw else cin, k, k)).astype(np.float32)
    attrs = {"strides": [s, s], "paddings": [p] * 4, "dilations": [1, 1], "groups": cin if dw else 1}
    op = get_op("depthwise_conv2d" if dw else "conv2d")
    return lambda: op.forward(OpContext(), attrs, x, w)


def _ort(cin, cout, h, k, s, p, dw, rng, threads, int8=True):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    group = cin if dw else 1
    wshape = (cout, cin // group, k, k)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, group=group)
    if int8:
        inits = [numpy_helper.from_array(np.float32(0.02), "xs"), numpy_helper.from_array(np.uint8(0), "xz"),
                 numpy_helper.from_array(rng.integers(-127, 128, wshape, dtype=np.int8), "w"),
                 numpy_helper.from_array(np.full(cout, 0.01, np.float32), "ws"),
                 numpy_helper.from_array(np.zeros(cout, np.int8), "wz"),
                 numpy_helper.from_array(np.float32(0.05), "ys"), numpy_helper.from_array(np.uint8(0), "yz")]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **attrs)
        xtype, x = TensorProto.UINT8, rng.integers(0, 256, (1, cin, h, h), dtype=np.uint8)
    else:
        inits = [numpy_helper.from_array(rng.standard_normal(wshape).astype(np.float32), "w")]
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        xtype, x = TensorProto.FLOAT, rng.standard_normal((1, cin, h, h)).astype(np.float32)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", xtype, [1, cin, h, h])],
                              [helper.make_tensor_value_info("y", xtype, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})


def _torch(cin, cout, h, k, s, p, dw, rng, engine):
    import torch
    from torch.ao.nn.quantized import Conv2d
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    torch.backends.quantized.engine = engine
    group = cin if dw else 1
    conv = Conv2d(cin, cout, k, stride=s, padding=p, groups=group)
    w = torch.from_numpy(rng.standard_normal((cout, cin // group, k, k)).astype(np.float32))
    qw = torch.quantize_per_channel(w, torch.full((cout,), 0.01, dtype=torch.double),
                                    torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    conv.set_weight_bias(qw, None)
    conv.scale, conv.zero_point = 0.05, 0
    x = torch.quantize_per_tensor(torch.from_numpy(rng.standard_normal((1, cin, h, h)).astype(np.float32)),
                                  0.02, 0, torch.quint8)
    return lambda: conv(x)


def run(threads_list=(1, 2), repeats: int = 9) -> dict:
    from refquant import threads
    rng = np.random.default_rng(0)
    result = {"machine": machine(), "layers": []}
    before = threads.get_num_threads()
    try:
        import torch
    except ImportError:
        torch = None
    for name, cin, cout, h, k, s, p, dw in CASES:
        oh = (h + 2 * p - k) // s + 1
        ops = 2 * oh * oh * cout * k * k * (1 if dw else cin)
        for n in threads_list:
            threads.set_num_threads(n)
            row = {"layer": name, "threads": n, "gop": ops / 1e9}
            runners = {"refquant INT8": _refquant_int8(cin, cout, h, k, s, p, dw, rng),
                       "refquant FP32": _refquant_fp32(cin, cout, h, k, s, p, dw, rng)}
            try:
                runners["ORT INT8"] = _ort(cin, cout, h, k, s, p, dw, rng, n)
                runners["ORT FP32"] = _ort(cin, cout, h, k, s, p, dw, rng, n, int8=False)
            except ImportError:
                pass
            if torch is not None:
                torch.set_num_threads(n)
                for engine in ("x86", "onednn"):
                    if engine in torch.backends.quantized.supported_engines:
                        runners[f"torch INT8 {engine}"] = _torch(cin, cout, h, k, s, p, dw, rng, engine)
            try:
                from threadpoolctl import threadpool_limits
                limit = threadpool_limits(n)
            except ImportError:
                limit = None
            engines = {key: key.split()[-1] for key in runners if key.startswith("torch")}
            timed = {key: (lambda f=fn, e=engines.get(key): (_engine(torch, e), f())) for key, fn in runners.items()}
            for key, sec in round_robin_bursts(timed, repeats).items():
                row[key] = ops / sec / 1e9
            row["route"] = _route(cin, k, s, p, dw)
            if limit is not None:
                limit.restore_original_limits()
            result["layers"].append(row)
    threads.set_num_threads(before)
    return result


def _engine(torch, engine):
    if engine is not None:
        torch.backends.quantized.engine = engine


def markdown(r: dict) -> str:
    keys = [k for k in ("refquant INT8", "ORT INT8", "torch INT8 x86", "torch INT8 onednn", "refquant FP32",
                        "ORT FP32") if any(k in row for row in r["layers"])]
    rows = []
    for row in r["layers"]:
        peers = [row[k] for k in ("ORT INT8", "torch INT8 x86", "torch INT8 onednn") if k in row]
        rows.append([row["layer"], row["threads"], row.get("route", "-")] +
                    [f"{row[k]:.0f}" if k in row else "-" for k in keys] +
                    [f"**{row['refquant INT8'] / max(peers):.2f}x**" if peers else "-"])
    return "GOPS (2 x MACs / s), batch 1, round-robin medians\n\n" + table(
        ["layer", "threads", "refquant INT8 route"] + keys + ["refquant INT8 / best peer INT8"], rows)


if __name__ == "__main__":
    print(markdown(run()))
