"""Paddle 3.3.1 / PaddleSlim 2.6.0 model fixtures for the Paddle importer, with Paddle's own outputs.

Four tiny models (``cnn``, ``dwse``, ``ocrhead``, ``ops``) are written as ``paddle.nn.Layer`` classes and given
fixed weights from a seeded NumPy generator. Each model is saved as

- ``fp32``: a legacy ProgramDesc (``model.pdmodel``) by ``paddle.static.save_inference_model`` (PIR off);
- ``fp32_pir``: the PIR ``model.json`` that ``paddle.jit.save`` writes for the same Layer and weights (PIR on,
  run in a child process because Paddle reads the PIR flag at import);

and ``cnn`` / ``dwse`` / ``ocrhead`` additionally as

- ``ptq`` / ``ptq_onnx``: ``paddleslim.quant.quant_post_static(algo="KL", batch_nums=4)`` of the ``fp32``
  model, with ``onnx_format=False`` / ``True``;
- ``qat`` / ``qat_onnx``: ``paddleslim.quant.quant_aware`` on the static program, a few SGD steps on random
  labels, then ``convert`` and ``save_inference_model`` (``onnx_format=False`` / ``True``);
- ``ocrhead/ptq_pir``: the ``ptq_onnx`` program loaded with PIR on (Paddle translates it) and saved as
  ``model.json`` (PaddleSlim 2.6 itself only writes legacy programs).

Every saved model is loaded back and run by Paddle on the fixed input ``x``; ``<model>/io.npz`` holds ``x``, the
calibration batches ``calib`` and ``out_<variant>`` (``out_<variant>_<i>`` for several outputs). Quantized variants
get ``scales.json`` (the thresholds read from the saved program and parameters); ``inventory.json`` lists every
file with its size, sha256, op types, inputs and outputs.

Run with the Paddle virtualenv's python:
    python tests/data/paddle_models/make_models.py [--out DIR]
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

if os.environ.get("PYTHONHASHSEED") != "0":
    # PaddleSlim's passes iterate over sets of tensor names: op order and scale-tensor names follow string hashing.
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
              dict(os.environ, PYTHONHASHSEED="0"))

PIR_STAGE = "--pir-stage" in sys.argv
os.environ["FLAGS_enable_pir_api"] = "1" if PIR_STAGE else "0"

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("cnn", "dwse", "ocrhead", "ops")
QUANTIZED = ("cnn", "dwse", "ocrhead")
SHAPES = {"cnn": (3, 16, 16), "dwse": (3, 16, 16), "ocrhead": (3, 16, 48), "ops": (3, 16, 16)}
SEEDS = {"cnn": 101, "dwse": 202, "ocrhead": 303, "ops": 404}
EVAL_BATCH = 2
CALIB_BATCHES = 4
CALIB_BATCH = 1        # PaddleSlim's default batch_size
QAT_BATCH = 2
QAT_STEPS = 3
QAT_LR = 1e-3


# ----------------------------------------------------------------------------------------------- models

class ConvBN(nn.Layer):
    """conv2d (no bias) + batch_norm + activation, the MobileNet block."""

    def __init__(self, cin, cout, k, stride=1, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.act = act

    def forward(self, x):
        y = self.bn(self.conv(x))
        return {"relu": F.relu, "hard_swish": F.hardswish, None: lambda t: t}[self.act](y)


def legacy_or(fn, op_type, inputs, attrs=None):
    """``fn()`` in dygraph / PIR; in a legacy static program, the legacy op ``op_type`` appended directly. Paddle
    3.3's Python APIs for several ops (sigmoid, tanh, gelu, maximum, matmul with transpose flags, ...) only build PIR
    values, so a legacy program gets them through its op registry instead."""
    if paddle.in_dynamic_mode() or paddle.framework.in_pir_mode():
        return fn()
    helper = paddle.base.layer_helper.LayerHelper(op_type)
    out = helper.create_variable_for_type_inference("float32")
    helper.append_op(type=op_type, inputs=inputs, outputs={"Out": out}, attrs=attrs or {})
    return out


def sigmoid(t):
    return legacy_or(lambda: F.sigmoid(t), "sigmoid", {"X": t})


def matmul(a, b, transpose_x=False, transpose_y=False):
    return legacy_or(lambda: paddle.matmul(a, b, transpose_x=transpose_x, transpose_y=transpose_y), "matmul_v2",
                     {"X": a, "Y": b}, {"trans_x": transpose_x, "trans_y": transpose_y})


class MulFC(nn.Layer):
    """A fully connected layer written as Paddle 1.x programs wrote it: ``mul`` (x_num_col_dims=1) +
    ``elementwise_add`` in a legacy program; ``matmul`` + ``add`` in PIR, which has no ``mul``."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight = self.create_parameter([cin, cout])
        self.bias = self.create_parameter([cout], is_bias=True)

    def forward(self, x):
        if paddle.in_dynamic_mode() or paddle.framework.in_pir_mode():
            return paddle.matmul(x, self.weight) + self.bias
        helper = paddle.base.layer_helper.LayerHelper("mul")
        out = helper.create_variable_for_type_inference("float32")
        helper.append_op(type="mul", inputs={"X": x, "Y": self.weight}, outputs={"Out": out},
                         attrs={"x_num_col_dims": 1, "y_num_col_dims": 1})
        return paddle.add(out, self.bias)


class CNN(nn.Layer):
    """conv+bn+relu, max pool, conv (stride 2) +bias+relu, flatten, fc (matmul_v2 + elementwise_add), softmax."""

    def __init__(self):
        super().__init__()
        self.block1 = ConvBN(3, 8, 3)
        self.conv2 = nn.Conv2D(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        y = F.max_pool2d(self.block1(x), 2, 2)
        y = F.relu(self.conv2(y))
        return F.softmax(self.fc(paddle.flatten(y, 1)))


class DWSE(nn.Layer):
    """MobileNetV3-like: conv+bn+hard_swish, depthwise conv+bn+hard_swish, squeeze-excitation, 1x1 conv, global
    average pool, fc (``mul`` in the legacy program), softmax."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 8, 3, stride=2, act="hard_swish")
        self.dw = ConvBN(8, 8, 3, groups=8, act="hard_swish")
        self.se1 = nn.Conv2D(8, 4, 1)
        self.se2 = nn.Conv2D(4, 8, 1)
        self.pw = ConvBN(8, 16, 1, act="hard_swish")
        self.fc = MulFC(16, 10)

    def forward(self, x):
        y = self.dw(self.stem(x))
        s = F.adaptive_avg_pool2d(y, 1)
        s = F.hardsigmoid(self.se2(F.relu(self.se1(s))), slope=0.2, offset=0.5)
        y = self.pw(y * s)  # elementwise_mul (paddle.multiply builds PIR values only)
        y = paddle.flatten(F.adaptive_avg_pool2d(y, 1), 1)
        return F.softmax(self.fc(y))


class OCRHead(nn.Layer):
    """PaddleOCR-rec-like without LSTM: conv blocks, pool the height to 1, squeeze + transpose to (N, T, C),
    fc (matmul_v2 + elementwise_add) to the classes, softmax over the last axis."""

    def __init__(self):
        super().__init__()
        self.b1 = ConvBN(3, 8, 3, act="hard_swish")
        self.b2 = ConvBN(8, 16, 3, stride=(2, 1), act="relu")
        self.b3 = ConvBN(16, 16, 3, act="hard_swish")
        self.fc = nn.Linear(16, 12)

    def forward(self, x):
        y = F.max_pool2d(self.b2(self.b1(x)), 2, 2)            # (N, 16, 4, 24)
        y = F.avg_pool2d(self.b3(y), kernel_size=(4, 1), stride=(4, 1))  # (N, 16, 1, 24)
        y = paddle.transpose(paddle.squeeze(y, axis=2), [0, 2, 1])      # (N, 24, 16)
        return F.softmax(self.fc(y), axis=-1)


class Ops(nn.Layer):
    """FP32 op coverage: the activations, elementwise, shape, resize, normalization, pooling and attention ops of
    PaddleOCR det/rec/cls and the classification zoo. Three outputs: class probabilities, a DB-like sigmoid map and
    an attention sequence."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 8, 3, act=None)
        self.up = nn.Conv2DTranspose(8, 4, 2, stride=2)
        self.ln = nn.LayerNorm(8)
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.drop_attn = nn.Dropout(0.1)                            # upscale_in_train: identity at inference
        self.drop_cls = nn.Dropout(0.2, mode="downscale_in_infer")  # PaddleClas MobileNetV3: scales by 0.8
        self.head = nn.Conv2D(12, 1, 1)
        self.cls = nn.Linear(8, 5)

    def forward(self, x):
        a = self.stem(x)                                             # (N, 8, 16, 16)
        b = F.relu6(a) + F.leaky_relu(a, 0.1) - F.swish(a)
        b = b / (sigmoid(a) + 1.0)
        gelu = legacy_or(lambda: F.gelu(a), "gelu", {"X": a}, {"approximate": False})
        b = paddle.pow(paddle.clip(b, -2.0, 2.0), paddle.full([1], 2.0)) + gelu * F.hardsigmoid(a)
        tanh = legacy_or(lambda: paddle.tanh(a), "tanh", {"X": a})
        b = legacy_or(lambda: paddle.maximum(b, tanh), "elementwise_max", {"X": b, "Y": tanh}, {"axis": -1})
        c = paddle.concat([b, F.hardswish(a)], axis=1)               # (N, 16, 16, 16)
        s1, s2 = paddle.split(c, 2, axis=1)
        d = (s1 * s2)[:, :, 2:14, 2:14]                              # (N, 8, 12, 12)
        d = F.pad(d, [1, 1, 1, 1], mode="reflect")                   # (N, 8, 14, 14)
        mp = F.max_pool2d(d, 2, 2)                                   # (N, 8, 7, 7)
        ap = F.avg_pool2d(d, 3, 2, padding=1, exclusive=False)       # (N, 8, 7, 7)
        up1 = F.interpolate(mp, scale_factor=2, mode="nearest")      # (N, 8, 14, 14)
        up2 = F.interpolate(ap, size=[14, 14], mode="bilinear", align_corners=False)
        e = paddle.concat([up1 + up2, self.up(mp)], axis=1)          # (N, 12, 14, 14)
        det = sigmoid(self.head(e))                                  # (N, 1, 14, 14)

        t = paddle.transpose(paddle.flatten(up1 - up2, 2), [0, 2, 1])  # (N, 196, 8)
        t = self.ln(t)
        att = matmul(self.q(t), self.k(t), transpose_y=True) * (8 ** -0.5)
        att = self.drop_attn(F.softmax(att, axis=-1))
        seq = matmul(att, t)                                         # (N, 196, 8)
        gram = matmul(t, seq, transpose_x=True)                      # (N, 8, 8)
        seq = paddle.reshape(seq, [0, 14, 14, 8])
        seq = paddle.transpose(seq, [0, 3, 1, 2])                    # (N, 8, 14, 14)
        n = paddle.shape(x)[0]
        seq = paddle.reshape(seq, [n, 8, -1])                        # (N, 8, 196)
        seq = paddle.mean(seq, axis=-1, keepdim=True) + paddle.unsqueeze(paddle.mean(gram, axis=1), -1)

        g = F.adaptive_avg_pool2d(a, 2) + F.max_pool2d(a, 8, 8)      # (N, 8, 2, 2)
        g = paddle.squeeze(F.adaptive_avg_pool2d(g, 1), axis=[2, 3])   # (N, 8)
        g = g - legacy_or(lambda: paddle.mean(g), "mean", {"X": g})
        cls = F.softmax(self.cls(self.drop_cls(g)))
        return cls, det, paddle.squeeze(seq, axis=-1)


LAYERS = {"cnn": CNN, "dwse": DWSE, "ocrhead": OCRHead, "ops": Ops}


def init_weights(layer, seed):
    """Fixed weights for every parameter and batch-norm statistic, by structured name (sorted), so the legacy and
    the PIR process give the same numbers."""
    rng = np.random.default_rng(seed)
    sublayers = dict(layer.named_sublayers())
    values = {}
    for key in sorted(layer.state_dict()):
        p = layer.state_dict()[key]
        owner, attr = key.rsplit(".", 1)
        kind = type(sublayers.get(owner)).__name__
        shape = tuple(p.shape)
        if attr == "_variance":
            v = rng.uniform(0.5, 1.5, shape)
        elif attr == "_mean":
            v = rng.normal(0.0, 0.2, shape)
        elif kind in ("BatchNorm2D", "LayerNorm"):
            v = rng.uniform(0.8, 1.2, shape) if attr == "weight" else rng.normal(0.0, 0.1, shape)
        elif attr == "bias":
            v = rng.normal(0.0, 0.1, shape)
        else:
            if kind in ("Linear", "MulFC"):
                fan_in = shape[0]
            elif kind == "Conv2DTranspose":
                fan_in = shape[0] * shape[2] * shape[3] // 4
            else:
                fan_in = int(np.prod(shape[1:]))
            bound = np.sqrt(6.0 / fan_in)
            v = rng.uniform(-bound, bound, shape)
        values[key] = v.astype(np.float32)
    return values


def model_data(model):
    """(x, calib): the evaluation input (EVAL_BATCH, C, H, W) and the calibration batches
    (CALIB_BATCHES, CALIB_BATCH, C, H, W), from generators that do not share a stream."""
    shape = SHAPES[model]
    x = np.random.default_rng(SEEDS[model] + 1).uniform(-1.0, 1.0, (EVAL_BATCH,) + shape).astype(np.float32)
    calib = np.random.default_rng(SEEDS[model] + 2).uniform(
        -1.0, 1.0, (CALIB_BATCHES, CALIB_BATCH) + shape).astype(np.float32)
    return x, calib


def to_f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def write_json(path, obj, indent=None):
    """Sorted keys; with ``indent`` plain indented JSON, otherwise each entry of the top two levels on its own line
    and deeper values compact."""
    if indent is not None:
        with open(path, "w") as f:
            f.write(json.dumps(obj, indent=indent, sort_keys=True) + "\n")
        return

    def compact(v):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))

    lines = ["{"]
    for i, (k, v) in enumerate(sorted(obj.items())):
        end = "," if i < len(obj) - 1 else ""
        if isinstance(v, dict) and v:
            lines.append(f" {compact(k)}:{{")
            for j, (k2, v2) in enumerate(sorted(v.items())):
                lines.append(f"  {compact(k2)}:{compact(v2)}" + ("," if j < len(v) - 1 else ""))
            lines.append(" }" + end)
        elif isinstance(v, list) and v:
            lines.append(f" {compact(k)}:[")
            lines += [f"  {compact(e)}" + ("," if j < len(v) - 1 else "") for j, e in enumerate(v)]
            lines.append(" ]" + end)
        else:
            lines.append(f" {compact(k)}:{compact(v)}{end}")
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------- legacy side

def build_static(model):
    """Build the legacy static program of ``model``: (main, startup, test, x, outputs, loss-or-None, layer)."""
    main, start = paddle.static.Program(), paddle.static.Program()
    main.random_seed = start.random_seed = SEEDS[model]
    with paddle.static.program_guard(main, start), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [None, *SHAPES[model]], "float32")
        layer = LAYERS[model]()
        outs = layer(x)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        test = main.clone(for_test=True)
        loss = None
        if model in QUANTIZED:
            probs = outs[0]
            label_shape = [None, 1] if probs.ndim == 2 else [None, probs.shape[1], 1]
            label = paddle.static.data("label", label_shape, "int64")
            loss = paddle.mean(F.cross_entropy(probs, label, use_softmax=False, axis=-1))
            paddle.optimizer.SGD(QAT_LR).minimize(loss)
    return main, start, test, x, outs, loss, layer


def inspect_legacy(prog):
    ops = {}
    for op in prog.global_block().ops:
        if op.type not in ("feed", "fetch"):
            ops[op.type] = ops.get(op.type, 0) + 1
    return dict(sorted(ops.items()))


def run_legacy(model_dir, x):
    """Load a saved legacy model with Paddle and run it on ``x``: (outputs, program, feeds, fetch names, scope)."""
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        prog, feeds, fetch = paddle.static.load_inference_model(os.path.join(model_dir, "model"), exe)
        res = exe.run(prog, feed={feeds[0]: x}, fetch_list=fetch)
    return [to_f32(r) for r in res], prog, feeds, [v.name for v in fetch], scope


QUANT_OPS = ("fake_quantize_abs_max", "fake_quantize_range_abs_max", "fake_quantize_moving_average_abs_max",
             "fake_channel_wise_quantize_abs_max", "fake_quantize_dequantize_moving_average_abs_max",
             "fake_quantize_dequantize_abs_max", "fake_channel_wise_quantize_dequantize_abs_max",
             "quantize_linear", "dequantize_linear")
DEQUANT_OPS = ("fake_channel_wise_dequantize_max_abs", "fake_dequantize_max_abs")


def read_scales(prog, scope):
    """The thresholds a saved quantized legacy program holds, keyed by the FP32 tensor they belong to.

    - ``activations``: tensor name -> every place the program records a threshold for it: the scale tensor of a
      quantize op (``InScale`` / ``Scale``), the second ``Scales`` tensor of ``fake_channel_wise_dequantize_max_abs``,
      the ``out_threshold`` and ``<Slot><i>_threshold`` attributes. Each entry names its op, slot / attribute and
      tensor.
    - ``weights``: parameter name -> its per-channel thresholds with their quant axis and source.
    - ``weights_stored``: parameter name -> dtype, shape and range of the stored values (whether they were saved
      as integers).
    """
    block = prog.global_block()
    persistable = {n for n, v in block.vars.items() if v.persistable}

    def tensor(name):
        var = scope.find_var(name)
        return None if var is None else np.array(var.get_tensor())

    producers = {}
    for op in block.ops:
        for s in op.output_names:
            for n in op.output(s):
                producers[n] = op

    def fp32_name(name):
        """Follow quantize / dequantize ops back to the tensor the first one reads."""
        while name in producers and producers[name].type in QUANT_OPS + DEQUANT_OPS:
            name = producers[name].input("X")[0]
        return name

    acts, weights = {}, {}

    def add_act(name, value, source):
        acts.setdefault(name, []).append(dict(source, threshold=float(value)))

    def add_weight(name, values, source):
        weights.setdefault(name, []).append(dict(source, thresholds=to_f32(values).ravel().tolist()))

    for op in block.ops:
        t = op.type
        attrs = {a: op.attr(a) for a in ("quant_axis", "bit_length", "quant_bits", "round_type", "only_observer")
                 if op.has_attr(a)}
        if t == "fake_channel_wise_dequantize_max_abs":
            # Follows a conv / mul / matmul_v2 whose weight holds integers: Scales[0] = the weight's per-channel
            # thresholds, Scales[1] = the threshold of the op's quantized input activation.
            producer = producers[op.input("X")[0]]
            wslot = "Filter" if "Filter" in producer.input_names else "Y"
            inslot = "Input" if "Input" in producer.input_names else "X"
            names = op.input("Scales")
            src = dict(attrs, op=t, slot="Scales")
            wscale = tensor(names[0])
            add_weight(producer.input(wslot)[0], wscale,
                       dict(src, index=0, tensor=names[0], scale_shape=list(wscale.shape)))
            if len(names) > 1:
                ascale = tensor(names[1])
                add_act(fp32_name(producer.input(inslot)[0]), ascale.ravel()[0],
                        dict(src, index=1, tensor=names[1], scale_shape=list(ascale.shape)))
        elif t in QUANT_OPS:
            slot = next(s for s in ("Scale", "InScale", "OutScale") if s in op.input_names + op.output_names
                        and (op.input(s) if s in op.input_names else op.output(s)))
            sname = (op.input(slot) if slot in op.input_names else op.output(slot))[0]
            x = op.input("X")[0]
            base = fp32_name(x)
            values = tensor(sname)
            src = dict(attrs, op=t, slot=slot, tensor=sname, scale_shape=list(values.shape))
            if base in persistable:
                add_weight(base, values, src)
            else:
                add_act(base, np.asarray(values).ravel()[0], src)
        for a in op.attr_names:
            if not a.endswith("threshold"):
                continue
            v = op.attr(a)
            if a == "out_threshold":
                slots = [s for s in ("Out", "Output", "Y") if s in op.output_names and op.output(s)]
                if slots:
                    add_act(op.output(slots[0])[0], v, {"op": t, "attr": a})
                continue
            # "<Slot><i>_threshold": Output0_threshold, Out0_threshold, Y0_threshold (outputs), X0_threshold ...
            slot = a[: -len("_threshold")]
            digits = len(slot) - len(slot.rstrip("0123456789"))
            name, i = (slot[:-digits], int(slot[-digits:])) if digits else (slot, 0)
            for names in ((op.output(name) if name in op.output_names else []),
                          (op.input(name) if name in op.input_names else [])):
                if len(names) > i:
                    add_act(fp32_name(names[i]), v, {"op": t, "attr": a})
                    break
    stored = {}
    for name in weights:
        w = tensor(name)
        if w is not None:
            stored[name] = {"dtype": str(w.dtype), "shape": list(w.shape), "min": float(w.min()),
                            "max": float(w.max()), "integer_valued": bool(np.all(w == np.round(w)))}
    return {"activations": dict(sorted(acts.items())), "weights": dict(sorted(weights.items())),
            "weights_stored": dict(sorted(stored.items()))}


def strip_callstacks(path):
    """Remove the ``op_callstack`` attributes from a saved ProgramDesc. Paddle records the Python stack (absolute
    file paths and line numbers of the generating script) on the ops it adds while saving, e.g. feed and fetch;
    without them the file depends only on the model."""
    with open(path, "rb") as f:
        desc = paddle.base.core.ProgramDesc(f.read())
    for b in range(desc.num_blocks()):
        block = desc.block(b)
        for i in range(block.op_size()):
            op = block.op(i)
            if op.has_attr("op_callstack"):
                op.remove_attr("op_callstack")
    with open(path, "wb") as f:
        f.write(desc.serialize_to_string())


class Recorder:
    """Collects per-variant outputs and descriptions while the models are saved."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.io = {}
        self.meta = {}

    def legacy(self, model, variant, x):
        d = os.path.join(self.out_dir, model, variant)
        strip_callstacks(os.path.join(d, "model.pdmodel"))
        outs, prog, feeds, fetch, scope = run_legacy(d, x)
        io = self.io.setdefault(model, {})
        for i, o in enumerate(outs):
            io[f"out_{variant}" if len(outs) == 1 else f"out_{variant}_{i}"] = o
        feed_shapes = {n: list(prog.global_block().var(n).shape) for n in feeds}
        self.meta.setdefault(model, {})[variant] = {
            "format": "legacy", "ops": inspect_legacy(prog), "inputs": feed_shapes, "outputs": fetch}
        if variant not in ("fp32",):
            write_json(os.path.join(d, "scales.json"), read_scales(prog, scope))
        print(f"{model}/{variant}: {sum(self.meta[model][variant]['ops'].values())} ops,"
              f" outputs {[o.shape for o in outs]}")
        return outs


def _initialized(model, scope, place, exe, start, layer):
    """Run the startup program in ``scope`` (already guarded), then set the model's seeded weights."""
    exe.run(start)
    values = init_weights(layer, SEEDS[model])
    names = {k: v.name for k, v in layer.state_dict().items()}
    for key, v in values.items():
        scope.find_var(names[key]).get_tensor().set(v, place)


def save_fp32(model, rec):
    main, start, test, x, outs, loss, layer = build_static(model)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        _initialized(model, scope, place, exe, start, layer)
        paddle.static.save_inference_model(os.path.join(rec.out_dir, model, "fp32", "model"), [x], outs, exe,
                                           program=test)
    return main, start, test, x, outs, loss, scope


def save_ptq(model, rec, calib, onnx_format):
    from paddleslim.quant import quant_post_static
    variant = "ptq_onnx" if onnx_format else "ptq"
    exe = paddle.static.Executor(paddle.CPUPlace())
    with paddle.static.scope_guard(paddle.static.Scope()):
        quant_post_static(
            exe, os.path.join(rec.out_dir, model, "fp32"), os.path.join(rec.out_dir, model, variant),
            data_loader=lambda: ({"x": b} for b in calib),
            model_filename="model.pdmodel", params_filename="model.pdiparams",
            batch_nums=CALIB_BATCHES, algo="KL", onnx_format=onnx_format, scope=paddle.static.global_scope())


def save_qat(model, rec, onnx_format):
    """quant_aware on a fresh copy of the program (same initial weights as fp32), QAT_STEPS SGD steps, convert."""
    from paddleslim.quant import convert, quant_aware
    variant = "qat_onnx" if onnx_format else "qat"
    main, start, test, x, outs, loss, layer = build_static(model)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    config = {"quantize_op_types": ["conv2d", "depthwise_conv2d", "mul", "matmul_v2"], "onnx_format": onnx_format}
    rng = np.random.default_rng(SEEDS[model] + 3)
    with paddle.static.scope_guard(scope):
        _initialized(model, scope, place, exe, start, layer)
        train = quant_aware(main, place, config, scope=scope, for_test=False, return_program=True)
        test_q = quant_aware(test, place, config, scope=scope, for_test=True)
        label_var = main.global_block().var("label")
        for step in range(QAT_STEPS):
            xb = rng.uniform(-1.0, 1.0, (QAT_BATCH, *SHAPES[model])).astype(np.float32)
            lshape = [QAT_BATCH] + [d for d in label_var.shape[1:-1]] + [1]
            lb = rng.integers(0, outs[0].shape[-1], lshape).astype(np.int64)
            (lv,) = exe.run(train, feed={"x": xb, "label": lb}, fetch_list=[loss.name])
            print(f"  {model}/{variant} step {step} loss {float(np.asarray(lv)):.5f}")
        frozen = convert(test_q, place, config, scope=scope)
        paddle.static.save_inference_model(os.path.join(rec.out_dir, model, variant, "model"),
                                           [frozen.global_block().var("x")],
                                           [frozen.global_block().var(o.name) for o in outs], exe, program=frozen)


class _NodeIdOrderedSet(set):
    """A set of graph nodes that iterates in node-id order. ``IrGraph.all_op_nodes()`` and friends return plain
    sets of wrapper objects hashed by memory address, so the quantization passes would visit ops (and number the
    ``channel_scale_<i>`` tensors they create) in a different order on every run."""

    def __iter__(self):
        return iter(sorted(set.__iter__(self), key=lambda n: n.node.id()))


def make_ir_graph_deterministic():
    from paddle.base.framework import IrGraph
    for name in ("all_op_nodes", "all_var_nodes", "all_persistable_nodes"):
        original = getattr(IrGraph, name)
        if getattr(original, "_id_ordered", False):
            continue

        def ordered(self, _original=original):
            return _NodeIdOrderedSet(_original(self))
        ordered._id_ordered = True
        setattr(IrGraph, name, ordered)


def legacy_main(out_dir, models):
    paddle.enable_static()
    make_ir_graph_deterministic()
    rec = Recorder(out_dir)
    for model in models:
        print(f"== {model}")
        mdir = os.path.join(out_dir, model)
        if os.path.isdir(mdir):
            shutil.rmtree(mdir)
        x, calib = model_data(model)
        save_fp32(model, rec)
        rec.legacy(model, "fp32", x)
        if model in QUANTIZED:
            for onnx_format in (False, True):
                save_ptq(model, rec, calib, onnx_format)
                rec.legacy(model, "ptq_onnx" if onnx_format else "ptq", x)
            for onnx_format in (False, True):
                save_qat(model, rec, onnx_format)
                rec.legacy(model, "qat_onnx" if onnx_format else "qat", x)
    return rec


# ----------------------------------------------------------------------------------------------- PIR side

def inspect_pir(prog):
    ops = {}
    for op in prog.global_block().ops:
        n = op.name()
        if n not in ("pd_op.data", "pd_op.fetch", "builtin.parameter", "builtin.shadow_output"):
            ops[n] = ops.get(n, 0) + 1
    return dict(sorted(ops.items()))


def run_pir(model_dir, x, scales=False):
    """Load a saved PIR model with Paddle and run it on ``x``: (outputs, description); with ``scales``, also write
    the program's thresholds to ``scales.json``."""
    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        prog, feeds, fetch = paddle.static.load_inference_model(os.path.join(model_dir, "model"), exe)
        res = exe.run(prog, feed={feeds[0]: x}, fetch_list=fetch)
        info = {"format": "pir", "ops": inspect_pir(prog), "inputs": {}, "outputs": []}
        for op in prog.global_block().ops:
            if op.name() == "pd_op.data":
                info["inputs"][op.attrs()["name"]] = list(op.result(0).shape)
            if op.name() == "pd_op.fetch":
                info["outputs"].append(op.attrs()["name"])
        if scales:
            write_json(os.path.join(model_dir, "scales.json"), read_pir_scales(prog, scope))
    paddle.disable_static()
    return [to_f32(r) for r in res], info


def translate_legacy(src, dst):
    """Load a legacy quantized program with the legacy loader, translate it to PIR with Paddle's program translator
    (``paddle.pir.translate_to_pir``, as ``load_inference_model`` does in PIR-executor mode) and save it as PIR."""
    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        with paddle.pir_utils.OldIrGuard():
            legacy, feeds, fetch = paddle.static.load_inference_model(os.path.join(src, "model"), exe)
            fetch_names = [v.name for v in fetch]
            # The legacy program declares its int8 weights as FP32 variables (the legacy loader takes each tensor's
            # dtype from the params file). The translated PIR program keeps the FP32 declaration, and Paddle 3.3.1's
            # PIR CPU kernel of dequantize_linear has no int8 input, so the weights are held as integer-valued FP32.
            for name, var in legacy.global_block().vars.items():
                found = scope.find_var(name) if var.persistable and name not in ("feed", "fetch") else None
                if found is not None and found.get_tensor()._is_initialized():
                    held = np.array(found.get_tensor())
                    if held.dtype == np.int8 and var.dtype == paddle.float32:
                        found.get_tensor().set(held.astype(np.float32), paddle.CPUPlace())
        prog = paddle.pir.translate_to_pir(legacy.desc)
        block = prog.global_block()
        feed_values, fetch_values = [], []
        for op in list(block.ops):
            if op.name() == "pd_op.feed":
                old = op.result(0)
                with paddle.static.program_guard(prog):
                    value = paddle.static.data(name=op.attrs()["name"], shape=old.shape, dtype=old.dtype)
                old.replace_all_uses_with(value)
                value.get_defining_op().move_before(op)
                block.remove_op(op)
                feed_values.append(value)
        for op in list(block.ops):
            if op.name() == "pd_op.fetch":
                fetch_values.append(op.operand_source(0))
                block.remove_op(op)
        assert len(fetch_values) == len(fetch_names)
        paddle.static.save_inference_model(os.path.join(dst, "model"), feed_values, fetch_values, exe, program=prog)
    paddle.disable_static()


def read_pir_scales(prog, scope):
    """The thresholds of a PIR program's pd_op.quantize_linear / dequantize_linear ops, in ``read_scales``'s layout.
    PIR values have no names, so an activation is keyed by its scale parameter's name without the ``@scale``
    suffix, which is the FP32 tensor name of the legacy program."""
    def param_name(value):
        op = value.get_defining_op() if value.initialized() else None
        return op.attrs()["parameter_name"] if op is not None and op.name() == "builtin.parameter" else None

    acts, weights, stored = {}, {}, {}
    for op in prog.global_block().ops:
        if op.name() not in ("pd_op.quantize_linear", "pd_op.dequantize_linear"):
            continue
        attrs = op.attrs()
        sname = param_name(op.operand_source(1))
        held = np.array(scope.find_var(sname).get_tensor())
        src = {k: attrs[k] for k in ("quant_axis", "bit_length", "qmin", "qmax", "round_type", "only_observer")}
        src.update(op=op.name(), slot="Scale", tensor=sname, scale_shape=list(held.shape))
        x = param_name(op.operand_source(0))
        if x is not None:
            weights.setdefault(x, []).append(dict(src, thresholds=to_f32(held).ravel().tolist()))
            w = np.array(scope.find_var(x).get_tensor())
            stored[x] = {"dtype": str(w.dtype), "shape": list(w.shape), "min": float(w.min()), "max": float(w.max()),
                         "integer_valued": bool(np.all(w == np.round(w)))}
        else:
            name = sname[: -len("@scale")] if sname.endswith("@scale") else sname
            acts.setdefault(name, []).append(dict(src, threshold=float(to_f32(held).ravel()[0])))
    return {"activations": dict(sorted(acts.items())), "weights": dict(sorted(weights.items())),
            "weights_stored": dict(sorted(stored.items()))}


def pir_main(out_dir, models, work):
    """Child process (PIR on): jit.save each Layer as fp32_pir; translate ocrhead/ptq_onnx to ptq_pir."""
    result = {}
    for model in models:
        x, _ = model_data(model)
        paddle.disable_static()
        with paddle.utils.unique_name.guard():
            layer = LAYERS[model]()
        for key, v in init_weights(layer, SEEDS[model]).items():
            layer.state_dict()[key].set_value(v)
        layer.eval()
        d = os.path.join(out_dir, model, "fp32_pir")
        spec = [paddle.static.InputSpec([None, *SHAPES[model]], "float32", "x")]
        paddle.jit.save(layer, os.path.join(d, "model"), input_spec=spec)
        outs, info = run_pir(d, x)
        result[f"{model}/fp32_pir"] = {"outs": [o.tolist() for o in outs], "info": info}
        if model == "ocrhead":
            translate_legacy(os.path.join(out_dir, model, "ptq_onnx"), os.path.join(out_dir, model, "ptq_pir"))
            # Paddle 3.3.1 saves this program but does not run it correctly (see the README): its output is kept
            # apart from io.npz and only compared with ptq_onnx's, whose program it translates.
            outs, info = run_pir(os.path.join(out_dir, model, "ptq_pir"), x, scales=True)
            result[f"{model}/ptq_pir"] = {"unverified_outs": [o.tolist() for o in outs], "info": info}
    with open(os.path.join(work, "pir.json"), "w") as f:
        json.dump(result, f)


# ----------------------------------------------------------------------------------------------- driver

def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="output directory (default: this script's directory)")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--pir-stage", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    if args.pir_stage:
        pir_main(out_dir, args.models, args.pir_stage)
        return
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        cwd = os.getcwd()
        os.chdir(work)   # PaddleSlim reads / writes a mapping table in the working directory
        try:
            rec = legacy_main(out_dir, args.models)
            env = dict(os.environ, FLAGS_enable_pir_api="1")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--out", out_dir, "--models", *args.models,
                            "--pir-stage", work], check=True, env=env)
            with open(os.path.join(work, "pir.json")) as f:
                pir = json.load(f)
        finally:
            os.chdir(cwd)
    for key, r in pir.items():
        model, variant = key.split("/")
        if "unverified_outs" in r:
            ref = rec.io[model]["out_ptq_onnx"]
            diff = float(np.abs(to_f32(r["unverified_outs"][0]) - ref).max())
            r["info"]["paddle_output"] = (
                "not stored: Paddle 3.3.1's PIR executor does not run this translated program correctly "
                f"(max |out - out_ptq_onnx| = {diff:.3g}); the program is ptq_onnx's, so out_ptq_onnx is its "
                "expected output")
            print(f"{model}/{variant}: Paddle's PIR run differs from out_ptq_onnx by {diff:.3g} (not stored)")
            rec.meta[model][variant] = r["info"]
            continue
        outs = [to_f32(o) for o in r["outs"]]
        for i, o in enumerate(outs):
            rec.io[model][f"out_{variant}" if len(outs) == 1 else f"out_{variant}_{i}"] = o
        rec.meta[model][variant] = r["info"]
    inv_path = os.path.join(out_dir, "inventory.json")
    inventory = {}
    if os.path.exists(inv_path) and set(args.models) != set(MODELS):
        with open(inv_path) as f:
            inventory = json.load(f)
    for model in args.models:
        x, calib = model_data(model)
        io = {"x": x, "calib": calib, **dict(sorted(rec.io[model].items()))}
        np.savez(os.path.join(out_dir, model, "io.npz"), **io)
        for k in io:
            if k.startswith("out_fp32_pir"):
                ref = io[k.replace("fp32_pir", "fp32")]
                print(f"{model}: {k} vs fp32 max |diff| {np.abs(io[k] - ref).max():.3g}")
        entry = {"io.npz": {"size": os.path.getsize(os.path.join(out_dir, model, "io.npz")),
                            "sha256": sha256(os.path.join(out_dir, model, "io.npz")),
                            "arrays": {k: list(v.shape) for k, v in io.items()}},
                 "variants": {}}
        for variant, info in sorted(rec.meta[model].items()):
            d = os.path.join(out_dir, model, variant)
            files = {f: {"size": os.path.getsize(os.path.join(d, f)), "sha256": sha256(os.path.join(d, f))}
                     for f in sorted(os.listdir(d))}
            entry["variants"][variant] = dict(info, files=files)
        inventory[model] = entry
    write_json(inv_path, dict(sorted(inventory.items())), indent=1)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out_dir) for f in fs)
    print(f"wrote {out_dir}: {total} bytes")


if __name__ == "__main__":
    main()
