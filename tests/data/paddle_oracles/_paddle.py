"""Shared set-up of the oracle scripts: Paddle's legacy static graph (run with the Paddle virtualenv's python)."""
import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")

import numpy as np  # noqa: E402
import paddle  # noqa: E402

paddle.enable_static()

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


def bits(a):
    """float32 array -> its uint32 bit patterns (fixtures store exact bits)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def run_op(op_type, inputs, outputs, attrs, state=None):
    """Run one Paddle op. ``inputs``: {slot: (name, array)} fed; ``state``: {name: array} persistable variables
    set in the scope first (an output slot may name one, for in-place statistics); ``outputs``: {slot: name}.
    Returns {name: array} of every output and every state variable after the run."""
    state = state or {}
    main, start = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, start):
        blk = main.global_block()
        made = {}
        for name, arr in state.items():
            made[name] = blk.create_var(name=name, shape=arr.shape, dtype=str(arr.dtype), persistable=True)
        ins = {}
        for slot, (name, arr) in inputs.items():
            if name not in made:
                made[name] = blk.create_var(name=name, shape=arr.shape, dtype=str(arr.dtype))
            ins[slot] = made[name]
        outs = {}
        for slot, name in outputs.items():
            if name not in made:
                made[name] = blk.create_var(name=name, dtype="float32")
            outs[slot] = made[name]
        blk.append_op(type=op_type, inputs=ins, outputs=outs, attrs=attrs)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        for name, arr in state.items():
            scope.var(name).get_tensor().set(arr, place)
        feed = {name: arr for name, arr in inputs.values() if name not in state}
        names = list(dict.fromkeys(list(outputs.values()) + list(state)))
        res = exe.run(main, feed=feed, fetch_list=names)
    return {n: np.array(r) for n, r in zip(names, res)}
