"""Oracle for embedding quantization: PaddleSlim 2.6.0 ``quant_embedding`` on a one-op ``lookup_table`` program
(Paddle 3.3.1), recording the int table, the scale / dictionary and the dequantized lookups of chosen ids.

Run with the Paddle virtualenv's python from the repository root:
    python tests/data/paddle_oracles/make_embedding.py
Writes tests/data/paddle_oracles/embedding.npz (case arrays) and embedding_text_mean.json (hashes of the
quantized zoo text_mean table, whose FP32 table is read with refquant from data/zoo).
"""
import hashlib
import json
import os
import sys

from _paddle import HERE, REPO, bits, np, paddle
from paddleslim.quant import quant_embedding


def paddleslim_quant(w, qtype, ids, padding_idx=-1, quantize_bits=8, dtype="int8"):
    main, start = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, start):
        x = paddle.static.data("ids", [-1, 1], "int64")
        table = paddle.static.create_parameter(list(w.shape), "float32", name="emb_w")
        out = main.global_block().create_var(name="emb_out", dtype="float32")
        main.global_block().append_op(type="lookup_table", inputs={"W": table, "Ids": x}, outputs={"Out": out},
                                      attrs={"padding_idx": padding_idx, "is_sparse": False})
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    cfg = {"quantize_op_types": ["lookup_table"],
           "lookup_table": {"quantize_type": qtype, "quantize_bits": quantize_bits, "dtype": dtype}}
    with paddle.static.scope_guard(scope):
        exe.run(start)
        scope.find_var("emb_w").get_tensor().set(np.asarray(w, np.float32), place)
        qprog = quant_embedding(main, place, cfg, scope=scope)
        rows = exe.run(qprog, feed={"ids": np.asarray(ids, np.int64).reshape(-1, 1)},
                       fetch_list=["emb_out.dequantize"])[0]
        q = np.array(scope.find_var("emb_w.int").get_tensor())
        aux = np.array(scope.find_var("emb_w.dict" if qtype == "log" else "emb_w.scale").get_tensor())
    return q, np.asarray(aux, np.float32).reshape(-1), np.asarray(rows, np.float32).reshape(len(ids), w.shape[1])


def cases():
    rng = np.random.default_rng(20261202)
    yield "mask01_log", np.array([[0, 1], [1, 0], [1, 1]], np.float32), "log", -1, [0, 1, 2, 1]
    # fewer than 128 levels, zeros (both signs), negatives, tiny values, a padding row holding non-zeros
    w = (rng.standard_normal((40, 9)) * 0.3).astype(np.float32)
    w[rng.random(w.shape) < 0.15] = 0.0
    w = (np.round(w * 8) / 8).astype(np.float32)                  # few distinct magnitudes
    w[3, :4] = [-0.0, 1e-30, -1e-30, 7.0]
    yield "zeros_log_pad", w.astype(np.float32), "log", 5, [0, 5, 3, 39, 5, 12]
    yield "zeros_abs_max_pad", w.astype(np.float32), "abs_max", 5, [0, 5, 3, 39, 5, 12]
    # more than 128 levels and zeros: the zero level falls out, zeros take index 0
    w = (np.exp(rng.uniform(-14, 2, (64, 11))) * np.where(rng.random((64, 11)) < 0.5, -1, 1)).astype(np.float32)
    w[rng.random(w.shape) < 0.1] = 0.0
    yield "many_levels_log_pad", w, "log", 2, [2, 0, 63, 2, 17]
    # the same without padding, int16 abs_max with a padding id
    yield "many_levels_abs_max16_pad", w, "abs_max16", 63, [63, 1, 2]
    yield "all_zero_log", np.zeros((4, 3), np.float32), "log", 1, [0, 1, 3]


def main():
    arrays = {}
    for name, w, qtype, pad, ids in cases():
        kw = {"quantize_bits": 16, "dtype": "int16"} if qtype == "abs_max16" else {}
        q, aux, rows = paddleslim_quant(w, qtype.replace("16", ""), ids, pad, **kw)
        arrays.update({f"{name}/w": w, f"{name}/ids": np.asarray(ids, np.int64), f"{name}/pad": np.int64(pad),
                       f"{name}/q": q, f"{name}/aux_bits": bits(aux), f"{name}/rows_bits": bits(rows)})
        print(name, q.dtype, q.shape, aux[:4], rows.shape)
    np.savez_compressed(os.path.join(HERE, "embedding.npz"), **arrays)

    sys.path.insert(0, REPO)                                      # only to read the zoo model's FP32 table
    from refquant.models.pretrained import pretrained
    w = pretrained("text_mean", train_if_missing=False).params["embedding_0.w_0"]
    ids = np.arange(w.shape[0])
    out = {"table": "embedding_0.w_0", "padding_idx": 0,
           "fp32_sha256": hashlib.sha256(np.ascontiguousarray(w, np.float32).tobytes()).hexdigest()}
    for qtype in ("log", "abs_max"):
        q, aux, rows = paddleslim_quant(w, qtype, ids, padding_idx=0)
        out[qtype] = {"int_sha256": hashlib.sha256(q.tobytes()).hexdigest(), "int_dtype": str(q.dtype),
                      "aux_bits": bits(aux).tolist(),
                      "rows_sha256": hashlib.sha256(bits(rows).tobytes()).hexdigest()}
        print("text_mean", qtype, q.dtype, aux.size)
    with open(os.path.join(HERE, "embedding_text_mean.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
