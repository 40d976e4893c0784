"""Oracle for QAT with ``onnx_format=True`` (PaddleSlim 2.6.0's default: QuantizationTransformPassV2, quantize_linear
/ dequantize_linear): a tiny static program ``o = mul(relu(mul(x, w1)), w2)``, loss ``sum(o * c)``, SGD(lr 0.1),
quantized by ``quant_aware`` (default config) and trained for a few steps on fixed batches; then the test
program, ``convert`` and the converted program (Paddle 3.3.1, CPU).

Per step it records the weights before the step, every quantize_linear / dequantize_linear output, the scales,
moving-average states, the outputs, the loss and the gradients; at the end the eval output of the test program,
the int8 weights ``convert`` writes and the converted program's output.

Run with the Paddle virtualenv's python from the repository root:
    python tests/data/paddle_oracles/make_qat_onnx.py
Writes tests/data/paddle_oracles/qat_onnx.npz (float arrays as uint32 bits under ``*_bits`` keys).
"""
import os

from _paddle import HERE, bits, np, paddle
from paddleslim.quant import convert, quant_aware

STEPS = 4
LR = 0.1


def build():
    main, start = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, start):
        x = paddle.static.data("x", [4, 3], "float32")
        c = paddle.static.data("c", [4, 2], "float32")
        w1 = paddle.static.create_parameter([3, 5], "float32", name="w1")
        w2 = paddle.static.create_parameter([5, 2], "float32", name="w2")
        blk = main.global_block()

        def op(op_type, inputs, shape, attrs=None, name=None):
            out = blk.create_var(name=name, dtype="float32", shape=shape)
            blk.append_op(type=op_type, inputs=inputs, outputs={"Out": out}, attrs=attrs or {})
            return out
        mul_attrs = {"x_num_col_dims": 1, "y_num_col_dims": 1}
        h = op("mul", {"X": x, "Y": w1}, [4, 5], mul_attrs, "h")
        r = op("relu", {"X": h}, [4, 5], name="r")
        o = op("mul", {"X": r, "Y": w2}, [4, 2], mul_attrs, "o")
        oc = op("elementwise_mul", {"X": o, "Y": c}, [4, 2], {"axis": -1}, "oc")
        loss = op("reduce_sum", {"X": oc}, [1], {"reduce_all": True, "dim": [0], "keep_dim": False}, "loss")
        paddle.optimizer.SGD(LR).minimize(loss)
    return main, start


def main():
    rng = np.random.default_rng(20261202)
    w1 = rng.uniform(-1, 1, (3, 5)).astype(np.float32)
    w2 = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    xs = [rng.uniform(-3, 2, (4, 3)).astype(np.float32) for _ in range(STEPS)]
    for x in xs:
        x[0, 0] = -0.0
    cs = [rng.uniform(-1, 1, (4, 2)).astype(np.float32) for _ in range(STEPS)]
    x_eval = rng.uniform(-4, 3, (4, 3)).astype(np.float32)

    main_prog, start = build()
    test_prog = main_prog.clone(for_test=True)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    out = {"w1_init": w1, "w2_init": w2, "x": np.stack(xs), "c": np.stack(cs), "x_eval": x_eval,
           "lr": np.float32(LR), "steps": np.int64(STEPS)}
    with paddle.static.scope_guard(scope):
        exe.run(start)
        scope.find_var("w1").get_tensor().set(w1, place)
        scope.find_var("w2").get_tensor().set(w2, place)
        train = quant_aware(main_prog, place, None, scope=scope, for_test=False, return_program=True)
        test = quant_aware(test_prog, place, None, scope=scope, for_test=True)
        stats = {}   # activation / weight -> (state, accum) variable names
        for o in train.global_block().ops:
            if o.type == "quantize_linear" and o.input("InState"):
                stats[o.input("X")[0]] = (o.input("InState")[0], o.input("InAccum")[0])
        tensors = ["x.quantized", "x.quantized.dequantized", "w1.quantized", "w1.quantized.dequantized", "h", "r",
                   "r.quantized", "r.quantized.dequantized", "w2.quantized", "w2.quantized.dequantized", "o",
                   "loss", "w1@GRAD", "w2@GRAD", "r@GRAD", "h@GRAD", "o@GRAD",
                   "x@scale", "w1@scale", "r@scale", "w2@scale"]
        tensors += [v for pair in (stats["x"], stats["r"]) for v in pair]
        for step in range(STEPS):
            for w in ("w1", "w2"):
                out[f"step{step}/{w}_before_bits"] = bits(np.array(scope.find_var(w).get_tensor()))
            res = exe.run(train, feed={"x": xs[step], "c": cs[step]}, fetch_list=tensors)
            for name, value in zip(tensors, res):
                key = name.replace(stats["x"][0], "x@state").replace(stats["x"][1], "x@accum")
                key = key.replace(stats["r"][0], "r@state").replace(stats["r"][1], "r@accum")
                out[f"step{step}/{key}_bits"] = bits(np.array(value))
            print(step, "loss", np.array(res[tensors.index("loss")]), "x@scale", np.array(res[tensors.index("x@scale")]),
                  "w1@scale", np.array(res[tensors.index("w1@scale")]))
        for w in ("w1", "w2"):
            out[f"final/{w}_bits"] = bits(np.array(scope.find_var(w).get_tensor()))
        for s in ("x@scale", "w1@scale", "r@scale", "w2@scale"):
            out[f"final/{s}_bits"] = bits(np.array(scope.find_var(s).get_tensor()))
        ev = exe.run(test, feed={"x": x_eval, "c": cs[0]},
                     fetch_list=["o", "x.quantized.dequantized", "w1.quantized.dequantized", "r.quantized.dequantized"])
        for name, value in zip(("o", "x.quantized.dequantized", "w1.quantized.dequantized",
                                "r.quantized.dequantized"), ev):
            out[f"eval/{name}_bits"] = bits(np.array(value))
        frozen = convert(test, place, None, scope=scope)
        print([o.type for o in frozen.global_block().ops])
        for o in frozen.global_block().ops:
            if o.type in ("quantize_linear", "dequantize_linear"):
                print("  ", o.type, o.input("X"), o.input("Scale"), o.output("Y"),
                      {a: o.attr(a) for a in ("quant_axis", "only_observer", "is_test") if o.has_attr(a)})
        for w in ("w1", "w2"):
            q = np.array(scope.find_var(w).get_tensor())
            print(w, q.dtype)
            out[f"convert/{w}"] = q
        res = exe.run(frozen, feed={"x": x_eval, "c": cs[0]}, fetch_list=["o"])
        out["convert/o_bits"] = bits(np.array(res[0]))
        print("eval o", np.array(ev[0]).ravel()[:4], "converted o", np.array(res[0]).ravel()[:4])
    np.savez_compressed(os.path.join(HERE, "qat_onnx.npz"), **out)


if __name__ == "__main__":
    main()
