"""Every teaching figure of docs/concepts.md is drawn by committed code from a real run: each KIND of
``refquant plot`` draws here at low resolution (``quick``) and writes a real, non-blank PNG."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from refquant import plot  # noqa: E402
from refquant.cli import main  # noqa: E402


def _pixels(path):
    from PIL import Image
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("L"))


@pytest.mark.parametrize("kind", list(plot.KINDS))
def test_figure_draws(kind, tmp_path):
    out = tmp_path / f"{kind}.png"
    plot.save_figure(kind, out, quick=True)
    px = _pixels(out)
    assert px.shape[0] >= 100 and px.shape[1] >= 200
    # a drawn figure: mostly white background, a good share of dark ink (lines, text), many grey levels
    assert (px < 128).mean() > 0.005 and (px > 250).mean() > 0.3
    assert len(np.unique(px)) > 20


def test_cli_plot(tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["plot", "gemm", "--quick", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    assert main(["plot", "gemm", "--out", str(tmp_path / "missing" / "g.png")]) == 2
    with pytest.raises(SystemExit):
        main(["plot", "no_such_figure", "--out", str(out)])


def test_thresholds_are_the_calibration_results():
    """The marked thresholds are calibrate()'s, and the KL curve's minimum is cal_kl_threshold's choice."""
    from refquant.calibration import calibrate, kl_curve, static_algorithms
    name, batches, _ = plot.layer_activation(quick=True)
    ts = plot._thresholds(name, batches)
    assert set(ts) == set(static_algorithms()) and ts["abs_max"] == max(ts.values())
    obs = calibrate(batches, "KL").observers[name]
    i, _ = min(kl_curve(obs.hist), key=lambda c: c[1])
    assert (i + 0.5) * float(obs.bin_width) == pytest.approx(ts["KL"], rel=1e-12)


def test_layer_falls_back_to_the_zoo(monkeypatch):
    """Without the PP-OCR files the calibration figures use a zoo MobileNetV1 layer and say so in the title."""
    from refquant.realmodels import ppocr
    monkeypatch.setattr(ppocr, "available", lambda: False)
    name, batches, source = plot.layer_activation.__wrapped__(quick=True)
    assert source.startswith("zoo mobilenet_v1") and "PP-OCR not installed" in source
    assert len(batches) == 2 and batches[0][name].shape[0] == 32


def test_without_matplotlib(tmp_path, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    assert main(["plot", "kl", "--out", str(tmp_path / "k.png")]) == 1
    assert "pip install 'refquant[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "k.png").exists()
