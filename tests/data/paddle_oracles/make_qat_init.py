"""Oracle for a warm-started QAT threshold: PaddleSlim 2.6.0 ``quant_aware`` with ``onnx_format=False``
(QuantizationTransformPass) on the program of make_qat_onnx.py, with ``x@scale`` = 2.5 already in the scope
(what ``quant_post_first`` leaves). Records the initial scale / state / accum the pass creates for ``x`` and the
values after one training step.

Run with the Paddle virtualenv's python from the repository root:
    python tests/data/paddle_oracles/make_qat_init.py
Writes tests/data/paddle_oracles/qat_init.npz.
"""
import os

from _paddle import HERE, bits, np, paddle
from make_qat_onnx import build
from paddleslim.quant import quant_aware

T0 = np.float32(2.5)


def main():
    data = np.load(os.path.join(HERE, "qat_onnx.npz"))
    main_prog, start = build()
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    out = {"t0": T0}
    with paddle.static.scope_guard(scope):
        exe.run(start)
        scope.find_var("w1").get_tensor().set(data["w1_init"], place)
        scope.find_var("w2").get_tensor().set(data["w2_init"], place)
        scope.var("x@scale").get_tensor().set(np.array([T0], np.float32), place)
        train = quant_aware(main_prog, place, {"onnx_format": False}, scope=scope, for_test=False,
                            return_program=True)
        op = next(o for o in train.global_block().ops if o.input_names and "X" in o.input_names
                  and o.input("X") == ["x"])
        print(op.type)
        names = {"scale": op.input("InScale")[0], "state": op.input("InState")[0], "accum": op.input("InAccum")[0]}
        for k, n in names.items():
            out[f"init/{k}_bits"] = bits(np.array(scope.find_var(n).get_tensor()))
        exe.run(train, feed={"x": data["x"][0], "c": data["c"][0]})
        for k, n in names.items():
            out[f"step0/{k}_bits"] = bits(np.array(scope.find_var(n).get_tensor()))
        print({k: v.view(np.float32) for k, v in out.items() if k != "t0"})
    np.savez_compressed(os.path.join(HERE, "qat_init.npz"), **out)


if __name__ == "__main__":
    main()
