"""quant_post_recipe (refquant.quant.recipe): every choice made on held-out calibration batches, on the
Paddle-checked LeNet of test_post_static, and `refquant quantize --recipe`."""
from __future__ import annotations

import numpy as np
import pytest

import refquant
from refquant.cli import main
from refquant.deploy import convert_to_int8
from refquant.errors import ArgumentError
from refquant.quant import quant_post_recipe, quant_post_static, thresholds
from refquant.quant.auto_algo import quant_post_auto
from refquant.quant.sensitivity import output_error

from .test_post_static import batches, lenet  # noqa: F401 - the oracle LeNet and its 4 calibration batches


def _err(model, q, feeds):
    out = model.outputs[0]
    return output_error([model.run(f)[out] for f in feeds], [q.run(f)[out] for f in feeds])


def test_without_smoothing_or_skips_it_is_the_best_candidate_on_the_split(lenet, batches):
    q = quant_post_recipe(lenet, batches, smooth=False, refit=False)
    r = q.meta["quantization"]["recipe"]
    assert set(r["distance_by_algo"]) == set(refquant.calibration.algorithms.static_algorithms()) | {"auto"}
    assert r["distance_by_algo"][r["algo"]] == min(r["distance_by_algo"].values())
    want = (quant_post_auto(lenet, batches[:3], select_feeds=batches[3:]) if r["algo"] == "auto" else
            quant_post_static(lenet, batches[:3], algo=r["algo"]))
    got, ref = thresholds(q), thresholds(want)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    assert (r["holdout_batches"], r["calibration_batches"], r["k"], r["skip"]) == (1, 3, 0, [])
    assert _err(lenet, q, batches[3:]) == pytest.approx(r["distance_by_k"][0], rel=1e-6)


def test_refit_recalibrates_the_choice_on_every_batch(lenet, batches):
    q = quant_post_recipe(lenet, batches, smooth=False, candidates=("abs_max", "hist"))
    r = q.meta["quantization"]["recipe"]
    full = {a: thresholds(quant_post_static(lenet, batches, algo=a)) for a in ("abs_max", "hist")}
    choice = q.meta["quantization"]["auto"]["choice"] if r["algo"] == "auto" else {}
    got = thresholds(q)
    assert r["refit"] and set(got) == set(full["abs_max"])
    for x in got:
        np.testing.assert_array_equal(got[x], full[choice.get(x, "abs_max") if r["algo"] == "auto" else r["algo"]][x])


def test_recipe_model_deploys_and_records_its_choices(lenet, batches):
    q = quant_post_recipe(lenet, batches, max_skip=2, candidates=("abs_max", "hist"))
    r = q.meta["quantization"]["recipe"]
    assert sorted(r["distance_by_k"]) == [0, 1, 2]         # budget 0 is never met: every k is tried
    assert r["distance_by_k"][r["k"]] == min(r["distance_by_k"].values())
    assert len(r["skip"]) == r["k"] and set(r["algo_counts"]) <= {"abs_max", "hist"}
    assert _err(lenet, convert_to_int8(q), batches) < 0.05


@pytest.mark.parametrize("judge", ["model", "layer"])
def test_smoothing_is_judged_on_the_held_out_batches(lenet, batches, judge):
    from refquant.quant.smooth import smooth
    kw = {} if judge == "model" else {"smooth_judge": judge}        # "model" is the default
    q, base = quant_post_recipe(lenet, batches, candidates=("abs_max",), refit=False, with_float=True, **kw)
    _, info = smooth(lenet, batches[:3], select_feeds=batches[3:], judge=judge)
    r = q.meta["quantization"]["recipe"]
    assert r["smooth_judge"] == judge and r["smoothed"] == info["smoothed"]
    assert base.meta["smooth"]["model_errors"] == info["model_errors"]
    assert bool(info["model_errors"]) == (judge == "model")
    with pytest.raises(ArgumentError, match="judge"):
        quant_post_recipe(lenet, batches, smooth_judge="output")


def test_budget_stops_at_the_first_k_that_meets_it(lenet, batches):
    q = quant_post_recipe(lenet, batches, max_skip=3, budget=1.0, candidates=("abs_max",))
    r = q.meta["quantization"]["recipe"]
    assert r["k"] == 0 and list(r["distance_by_k"]) == [0]


@pytest.mark.parametrize("kwargs, msg", [({"holdout": 4}, "holdout"), ({"holdout": 0}, "holdout"),
                                         ({"algo": "KL"}, "chosen by the recipe"), ({"max_skip": -1}, "max_skip"),
                                         ({"skip_tensor_list": ["w"]}, "chosen by the recipe")])
def test_bad_arguments(lenet, batches, kwargs, msg):
    with pytest.raises(ArgumentError, match=msg):
        quant_post_recipe(lenet, batches, **kwargs)


def test_one_batch_is_not_enough(lenet, batches):
    with pytest.raises(ArgumentError, match="two calibration batches"):
        quant_post_recipe(lenet, batches[:1])


def test_cli_recipe(lenet, batches, tmp_path, capsys):
    for i, b in enumerate(batches):
        np.save(tmp_path / f"calib{i}.npy", b["x"])
    refquant.save(lenet, tmp_path / "lenet.rq")
    assert main(["quantize", str(tmp_path / "lenet.rq"), "--data", str(tmp_path / "calib*.npy"), "--recipe",
                 "--max-skip", "1", "--out", str(tmp_path / "q.rq")]) == 0
    err = capsys.readouterr().err
    assert "recipe in" in err and "layers smoothed" in err
    q = refquant.load(tmp_path / "q.rq")
    assert q.meta["quantization"]["recipe"]["calibration_batches"] == 3
    assert main(["quantize", str(tmp_path / "lenet.rq"), "--data", str(tmp_path / "calib*.npy"), "--recipe",
                 "--skip", "w", "--out", str(tmp_path / "q2.rq")]) == 2
