"""Oracle for the C++ fake-quant ops on signed zeros and tiny negatives, and for range_abs_max's eviction test at
its float32/double edge (Paddle 3.3.1, CPU). Each case records the inputs, attributes and the outputs' exact bits.

Run with the Paddle virtualenv's python from the repository root:
    python tests/data/paddle_oracles/make_quant_ops.py
Writes tests/data/paddle_oracles/quant_ops.npz: for case ``c``, ``c/<input>`` arrays and ``c/<output>_bits``.
"""
import json
import os

from _paddle import HERE, bits, np, run_op

f32 = np.float32
# -0.0, tiny negatives that quantize to zero, zeros, and ordinary values (max |x| = 2 -> T = 2)
MIXED = f32([-0.0, -1e-10, -1e-45, -0.007, -0.0078, 0.0, 1e-10, 0.5, -2.0, 2.0, -0.3, -0.0039370])
ZEROS = f32([-0.0, 0.0, -0.0, -0.0])
CHANNELS = np.stack([MIXED[:8], f32([-0.0] * 8), f32([0.0, -0.0] * 4)]).astype(f32)   # channel 1, 2: T = 0


def cases():
    for rt in (0, 1):
        for name, x in (("mixed", MIXED), ("zeros", ZEROS)):
            yield (f"abs_max_quant/{name}/rt{rt}", "fake_quantize_abs_max", {"X": x}, ["Out", "OutScale"],
                   {"bit_length": 8, "round_type": rt}, {})
            yield (f"abs_max_qdq/{name}/rt{rt}", "fake_quantize_dequantize_abs_max", {"X": x},
                   ["Out", "OutScale"], {"bit_length": 8, "round_type": rt}, {})
            yield (f"moving_average/{name}/rt{rt}", "fake_quantize_dequantize_moving_average_abs_max",
                   {"X": x, "InScale": f32([0.001]), "InAccum": f32([1.0]), "InState": f32([1.0])},
                   ["Out", "OutScale", "OutAccum", "OutState"],
                   {"bit_length": 8, "round_type": rt, "moving_rate": 0.9, "is_test": False}, {})
            for t in (f32([2.0]), f32([0.0])):
                tag = "t0" if t[0] == 0 else "t2"
                yield (f"linear/{name}/{tag}/rt{rt}", "quantize_linear",
                       {"X": x, "Scale": t, "ZeroPoint": f32([0.0])}, ["Y"],
                       {"bit_length": 8, "round_type": rt, "quant_axis": -1, "is_test": True}, {})
        for axis in (0, 1):
            yield (f"channel_qdq/axis{axis}/rt{rt}", "fake_channel_wise_quantize_dequantize_abs_max",
                   {"X": CHANNELS}, ["Out", "OutScale"], {"bit_length": 8, "round_type": rt, "quant_axis": axis},
                   {})
    # range_abs_max: T_prev, the window before, the iteration (Paddle's, already incremented) and max|x| <= T_prev,
    # so the eviction test alone decides; the difference removed - T is exactly float32(1e-6) in "edge*"
    e = f32(1e-6)
    x = f32([5e-7, -0.0, -1e-7, -1e-12])
    for name, t, window, it in (("edge_zero_slot", e, [0, 0, 0], 2), ("edge_doubled", 2 * e, [0, 0, e], 2),
                                ("above", np.nextafter(e, f32(1)), [0, 0, 0], 2),
                                ("below", np.nextafter(e, f32(0)), [0, 0, 0], 2),
                                ("full_window_edge", 2 * e, [4e-7, 2e-7, e], 5)):
        yield (f"range/{name}", "fake_quantize_range_abs_max",
               {"X": x, "InScale": f32([t]), "Iter": np.int64([it]), "OutScales": f32(window)},
               ["Out", "OutScale", "OutScales"], {"window_size": 3, "bit_length": 8, "is_test": False,
                                                   "round_type": 1}, {"OutScales"})


def main():
    arrays, index = {}, {}
    for key, op, inputs, outs, attrs, in_place in cases():
        state = {f"{key}/{slot}": arr for slot, arr in inputs.items() if slot in in_place}
        feeds = {slot: (f"{key}/{slot}", arr) for slot, arr in inputs.items() if slot not in in_place}
        # the moving-average statistics are read and written in place, as the QAT pass wires them
        pairs = {"InAccum": "OutAccum", "InState": "OutState"}
        for slot in list(feeds):
            if slot in pairs:
                state[f"{key}/{slot}"] = feeds.pop(slot)[1]
        out_names = {slot: f"{key}/{slot}" for slot in outs}
        for src, dst in pairs.items():
            if dst in out_names and src in inputs:
                out_names[dst] = f"{key}/{src}"
        if "OutScales" in out_names:
            out_names["OutScales"] = f"{key}/OutScales"
        feed_slots = dict(feeds)
        feed_slots.update({slot: (f"{key}/{slot}", inputs[slot]) for slot in inputs if f"{key}/{slot}" in state})
        res = run_op(op, feed_slots, out_names, dict(attrs), state=state)
        for slot, arr in inputs.items():
            arrays[f"{key}/in_{slot}"] = arr
        for slot, name in out_names.items():
            arrays[f"{key}/{slot}_bits"] = bits(res[name]) if res[name].dtype == np.float32 else res[name]
        if op == "fake_quantize_range_abs_max":                      # its dequantize partner
            d = run_op("fake_dequantize_max_abs", {"X": ("q", res[out_names["Out"]]),
                                                   "Scale": ("s", res[out_names["OutScale"]])},
                       {"Out": "y"}, {"max_range": 127.0})
            arrays[f"{key}/Dequant_bits"] = bits(d["y"])
        index[key] = {"op": op, "attrs": attrs}
        print(key, {s: res[n].ravel()[:6].tolist() for s, n in out_names.items()})
    np.savez_compressed(os.path.join(HERE, "quant_ops.npz"), **arrays)
    with open(os.path.join(HERE, "quant_ops.json"), "w") as fh:
        json.dump(index, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
