"""The user's own model and calibration data: refquant.data.files (.npy / .npz / images, presets, batching, bad
files) and `refquant quantize` / `inspect` with --data, ONNX models in and QDQ ONNX out."""
import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import refquant
from refquant.cli import main
from refquant.data import files, render
from refquant.errors import ArgumentError, NonFiniteError, ShapeError
from refquant.graph import Model, Op, TensorSpec

HAVE_ONNX = importlib.util.find_spec("onnx") is not None
HAVE_ORT = HAVE_ONNX and importlib.util.find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="needs the onnx package")
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="needs onnx and onnxruntime")


def _spec_model(*specs):
    """A model whose inputs are ``specs`` (the first one is also its output): enough for load_feeds."""
    first = specs[0].name
    ops = [Op("scale", [first], ["out"], {"scale": 1.0, "bias": 0.0}, "s")]
    return Model(ops, {}, list(specs), ["out"])


def _lenet():
    from refquant.models.pretrained import pretrained
    return pretrained("lenet5")


def _digits(n=64):
    from refquant.data import load_digits
    return load_digits(16, "train")[0][:n]


def _one_error_line(capsys, code, expected_code, *words):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.startswith("refquant: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


# ---- arrays ------------------------------------------------------------------------------------------------
def test_npy_files_as_stored_and_rebatched(tmp_path):
    model = _spec_model(TensorSpec("x", (None, 2, 3)))
    x = np.arange(7 * 6, dtype=np.float32).reshape(7, 2, 3)
    np.save(tmp_path / "a.npy", x[:4])
    np.save(tmp_path / "b.npy", x[4])           # one sample: a batch axis is added
    np.save(tmp_path / "c.npy", x[5:])
    as_stored = files.load_feeds(model, tmp_path)
    assert [f["x"].shape[0] for f in as_stored] == [4, 1, 2]
    rebatched = files.load_feeds(model, str(tmp_path / "*.npy"), batch_size=3)
    assert [f["x"].shape[0] for f in rebatched] == [3, 3, 1]
    assert np.array_equal(np.concatenate([f["x"] for f in rebatched]), x)
    assert [f["x"].shape[0] for f in files.load_feeds(model, tmp_path, batch_size=3, batch_nums=2)] == [3, 3]
    # batch_nums stops the reading: a damaged file after the last batch needed is never opened
    (tmp_path / "d.npy").write_bytes(b"damaged")
    assert len(files.load_feeds(model, tmp_path, batch_nums=3)) == 3
    assert len(files.load_feeds(model, tmp_path, batch_size=7, batch_nums=1)) == 1
    with pytest.raises(files.DataFileError, match="d.npy"):
        files.load_feeds(model, tmp_path, batch_nums=4)
    # a list of entries, duplicates dropped, order kept
    listed = files.load_feeds(model, [tmp_path / "c.npy", tmp_path / "a.npy", str(tmp_path / "c.npy")])
    assert [f["x"].shape[0] for f in listed] == [2, 4]


def test_float64_is_cast_and_int_data_for_a_float_input_is_refused(tmp_path):
    model = _spec_model(TensorSpec("x", (None, 3)))
    np.save(tmp_path / "f64.npy", np.ones((2, 3)))
    (feed,) = files.load_feeds(model, tmp_path / "f64.npy")
    assert feed["x"].dtype == np.float32
    np.save(tmp_path / "i.npy", np.ones((2, 3), np.int64))
    with pytest.raises(ShapeError, match="i.npy.*float32.*int64"):
        files.load_feeds(model, tmp_path / "i.npy")


def test_npz_keys_name_the_inputs(tmp_path):
    model = _spec_model(TensorSpec("a", (None, 2)), TensorSpec("b", (None, 3), "int64"))
    np.savez(tmp_path / "one.npz", a=np.ones((4, 2), np.float32), b=np.arange(12).reshape(4, 3))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2), np.float32), b=np.arange(6, dtype=np.int32).reshape(2, 3))
    feeds = files.load_feeds(model, tmp_path, batch_size=3)
    assert [(f["a"].shape, f["b"].shape) for f in feeds] == [((3, 2), (3, 3)), ((3, 2), (3, 3))]
    assert feeds[1]["b"].dtype == np.int64 and feeds[1]["b"][0].tolist() == [9, 10, 11]
    np.savez(tmp_path / "bad.npz", a=np.ones((1, 2), np.float32), c=np.ones((1, 3)))
    with pytest.raises(files.DataFileError, match=r"bad.npz.*missing \['b'\].*unknown \['c'\]"):
        files.load_feeds(model, tmp_path / "bad.npz")
    np.save(tmp_path / "x.npy", np.ones((1, 2), np.float32))
    with pytest.raises(files.DataFileError, match="use .npz"):
        files.load_feeds(model, tmp_path / "x.npy")
    np.savez(tmp_path / "uneven.npz", a=np.ones((2, 2), np.float32), b=np.ones((3, 3), np.int64))
    with pytest.raises(ShapeError, match="different numbers of samples"):
        files.load_feeds(model, tmp_path / "uneven.npz")


def test_single_unnamed_npz_array_feeds_a_single_input_model(tmp_path):
    model = _spec_model(TensorSpec("x", (None, 2)))
    np.savez(tmp_path / "d.npz", np.ones((5, 2), np.float32))
    (feed,) = files.load_feeds(model, tmp_path / "d.npz")
    assert list(feed) == ["x"] and feed["x"].shape == (5, 2)


@pytest.mark.parametrize("writer,error,words", [
    (lambda p: np.save(p / "bad.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
     files.DataFileError, "pickle"),
    (lambda p: np.save(p / "bad.npy", np.array([[1.0, np.nan]], np.float32)), NonFiniteError, "NaN/Inf"),
    (lambda p: np.save(p / "bad.npy", np.array([[1.0, np.inf]])), NonFiniteError, "NaN/Inf"),
    (lambda p: np.save(p / "bad.npy", np.ones((2, 3), np.float32)), ShapeError, "dimension 1"),
    (lambda p: np.save(p / "bad.npy", np.ones((2, 2, 2), np.float32)), ShapeError, "rank 2"),
    (lambda p: np.save(p / "bad.npy", np.ones((0, 2), np.float32)), files.DataFileError, "no samples"),
    (lambda p: np.save(p / "bad.npy", np.array([["a", "b"]])), files.DataFileError, "not a numeric"),
    (lambda p: (p / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00garbage"), files.DataFileError, "not a readable"),
    (lambda p: (p / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip"), files.DataFileError, "not a readable"),
])
def test_bad_array_files_name_the_file(tmp_path, writer, error, words):
    model = _spec_model(TensorSpec("x", (None, 2)))
    writer(tmp_path)
    (path,) = list(tmp_path.iterdir())
    with pytest.raises(error) as exc:
        files.load_feeds(model, path)
    assert words in str(exc.value) and str(path) in str(exc.value)


def test_content_decides_not_the_suffix(tmp_path):
    model = _spec_model(TensorSpec("x", (None, 2)))
    np.savez(tmp_path / "zip.npz", x=np.ones((1, 2), np.float32))
    (tmp_path / "zip.npy").write_bytes((tmp_path / "zip.npz").read_bytes())
    np.save(tmp_path / "arr.npy", np.ones((1, 2), np.float32))
    (tmp_path / "arr.npz").write_bytes((tmp_path / "arr.npy").read_bytes())
    with pytest.raises(files.DataFileError, match="zip.npy.*name the file .npz"):
        files.load_feeds(model, tmp_path / "zip.npy")
    with pytest.raises(files.DataFileError, match="arr.npz.*name the file .npy"):
        files.load_feeds(model, tmp_path / "arr.npz")


def test_truncated_npy_and_npz(tmp_path):
    model = _spec_model(TensorSpec("x", (None, 64)))
    np.save(tmp_path / "full.npy", np.ones((32, 64), np.float32))
    np.savez_compressed(tmp_path / "full.npz", x=np.random.default_rng(0).random((32, 64)))
    for name in ("full.npy", "full.npz"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut{Path(name).suffix}"
        cut.write_bytes(data[:len(data) // 2])
        with pytest.raises(files.DataFileError, match="cut"):
            files.load_feeds(model, cut)


def test_paths_that_name_nothing(tmp_path):
    model = _spec_model(TensorSpec("x", (None, 2)))
    with pytest.raises(ArgumentError, match="matches no data file"):
        files.load_feeds(model, str(tmp_path / "*.npy"))
    with pytest.raises(ArgumentError, match="holds no data file"):
        files.load_feeds(model, tmp_path)
    with pytest.raises(ArgumentError, match="no such file"):
        files.load_feeds(model, tmp_path / "missing.npy")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ArgumentError, match="unknown data file type '.txt'"):
        files.load_feeds(model, tmp_path / "notes.txt")
    with pytest.raises(ArgumentError, match="batch_size"):
        files.load_feeds(model, tmp_path / "notes.txt", batch_size=0)
    with pytest.raises(ArgumentError):
        files.load_feeds(model, [])


# ---- images ------------------------------------------------------------------------------------------------
def _lines(folder: Path, n: int, suffixes=(".png", ".jpg")):
    folder.mkdir(exist_ok=True)
    imgs = []
    for i in range(n):
        img = render.render_line(render.random_sentence(1 + i % 3, seed=i), font_size=(20, 28, 36)[i % 3], seed=i,
                                 rotate180=bool(i % 2))
        img.save(folder / f"line{i:02d}{suffixes[i % len(suffixes)]}")
        imgs.append(img)
    return imgs


@pytest.mark.parametrize("name,reference", [
    ("ppocr-cls", lambda im: render.cls_input([im])[0]),
    ("ppocr-rec", lambda im: render.rec_input([im])[0]),
    ("ppocr-det", lambda im: render.det_input(im)[0]),
])
def test_ppocr_presets_match_the_ppocr_preprocessing(tmp_path, name, reference):
    img = _lines(tmp_path, 1, (".png",))[0]
    spec = TensorSpec("x", (None, 3, None, None))
    got = files.image_sample(tmp_path / "line00.png", spec, files.preset(name))
    want = reference(img)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5


def test_imagenet_preset_and_static_shapes(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    path = tmp_path / "a.png"
    x = files.image_sample(path, TensorSpec("x", (None, 3, None, None)), files.preset("imagenet"))
    assert x.shape == (3, 224, 224)
    # by hand: short side 256 (300x400 -> 256x341), centre crop 224, RGB, ImageNet mean / std
    im = Image.open(path).convert("RGB").resize((341, 256), Image.BILINEAR)
    top, left = 16, int(round((341 - 224) / 2))
    ref = np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32) * np.float32(1 / 255)
    ref = (ref - np.float32(files.IMAGENET_MEAN)) / np.float32(files.IMAGENET_STD)
    assert np.abs(x - ref.transpose(2, 0, 1)).max() < 1e-5
    # a static 32x32 input: crop 32, short side round(32 * 256 / 224) = 37
    assert files.image_sample(path, TensorSpec("x", (None, 3, 32, 32)), files.preset("imagenet")).shape == (3, 32, 32)
    # a line preset takes the input's static height and width, and pads short lines on the right with 0
    Image.new("RGB", (40, 20), (255, 255, 255)).save(tmp_path / "short.png")
    rec = files.image_sample(tmp_path / "short.png", TensorSpec("x", (None, 3, 32, 100)), files.preset("ppocr-rec"))
    assert rec.shape == (3, 32, 100) and np.all(rec[:, :, :64] == 1.0) and np.all(rec[:, :, 64:] == 0.0)
    # NHWC and grayscale inputs
    nhwc = files.image_sample(path, TensorSpec("x", (None, 224, 224, 3)), files.preset("imagenet", layout="nhwc"))
    assert np.array_equal(nhwc, x.transpose(1, 2, 0))
    assert files.image_sample(path, TensorSpec("x", (None, 16, 16, 1)), files.Preprocess()).shape == (16, 16, 1)
    with pytest.raises(ShapeError, match="smaller than the crop"):
        files.image_sample(path, TensorSpec("x", (None, 3, None, None)), files.Preprocess(crop=500))


def test_bgr_reverses_the_channels_before_the_mean(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 51)).save(tmp_path / "c.png")
    spec = TensorSpec("x", (None, 3, 4, 4))
    rgb = files.image_sample(tmp_path / "c.png", spec, files.Preprocess(mean=(0.5, 0.0, 0.0)))
    bgr = files.image_sample(tmp_path / "c.png", spec, files.Preprocess(mean=(0.5, 0.0, 0.0), channel_order="bgr"))
    assert np.allclose(rgb[:, 0, 0], [0.5, 0.0, 0.2]) and np.allclose(bgr[:, 0, 0], [-0.3, 0.0, 1.0])


def test_image_folders_batch_by_shape(tmp_path):
    _lines(tmp_path / "lines", 5)
    model = _spec_model(TensorSpec("x", (None, 3, None, None)))
    cls = files.load_feeds(model, tmp_path / "lines", batch_size=2, preprocess=files.preset("ppocr-cls"))
    assert [f["x"].shape for f in cls] == [(2, 3, 48, 192), (2, 3, 48, 192), (1, 3, 48, 192)]
    pages = tmp_path / "pages"
    pages.mkdir()
    for name, size in (("a", (300, 100)), ("b", (290, 100)), ("c", (200, 120)), ("d", (640, 2000))):
        Image.new("RGB", size, (200, 200, 200)).save(pages / f"{name}.png")
    det = files.load_feeds(model, pages, batch_size=4, preprocess=files.preset("ppocr-det"))
    # a and b both become 96x288 (multiples of 32); c 128x192; d's long side is limited to 960: 960x320
    assert [f["x"].shape for f in det] == [(2, 3, 96, 288), (1, 3, 128, 192), (1, 3, 960, 320)]


def test_bad_images(tmp_path):
    model = _spec_model(TensorSpec("x", (None, 3, 8, 8)))
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(files.DataFileError, match="cut.png: not a readable image"):
        files.load_feeds(model, tmp_path / "cut.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(files.DataFileError, match="text.jpg"):
        files.load_feeds(model, tmp_path / "text.jpg")
    with pytest.raises(ArgumentError, match="one rank-4 float input"):
        files.load_feeds(_spec_model(TensorSpec("x", (None, 8), "int64")), tmp_path / "ok.png")
    with pytest.raises(ArgumentError, match="mean has 2 values"):
        files.load_feeds(model, tmp_path / "ok.png", preprocess=files.Preprocess(mean=(0.1, 0.2)))
    Image.new("RGB", (20000, 1)).save(tmp_path / "thin.png")  # short side 1 -> 256: 256 x 5,120,000 pixels
    with pytest.raises(ShapeError, match="thin.png: resizing"):
        files.load_feeds(_spec_model(TensorSpec("x", (None, 3, None, None))), tmp_path / "thin.png",
                         preprocess=files.preset("imagenet"))
    for bad in (dict(geometry="nope"), dict(std=0.0), dict(scale=-1.0), dict(resize=(0, 3)),
                dict(geometry="line", crop=3), dict(mean="a")):
        with pytest.raises(ArgumentError):
            files.Preprocess(**bad)


def test_parser_options_override_the_preset():
    p = argparse.ArgumentParser()
    files.add_data_arguments(p, batch_nums=4)
    args = p.parse_args(["--data", "a", "--data", "b", "--preset", "ppocr-cls", "--rgb", "--resize", "32x100",
                         "--scale", "1/127.5", "--mean", "1"])
    pre = files.preprocess_from_args(args)
    assert args.data == ["a", "b"] and args.batch_nums == 4 and args.batch_size is None
    assert pre.geometry == "line" and pre.channel_order == "rgb" and pre.resize == (32, 100)
    assert pre.scale == pytest.approx(1 / 127.5) and pre.mean == (1.0,) and pre.std == (0.5,)
    for bad in (["--resize", "3x"], ["--scale", "0"], ["--mean", "nan"], ["--bgr", "--rgb"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_feeds_from_args_without_data():
    p = argparse.ArgumentParser()
    files.add_data_arguments(p, batch_nums=2)
    feeds = files.feeds_from_args(p.parse_args([]), _lenet())
    assert [f["x"].shape for f in feeds] == [(32, 1, 16, 16)] * 2
    with pytest.raises(ArgumentError, match="give --data"):
        files.feeds_from_args(p.parse_args([]), _spec_model(TensorSpec("x", (None, 2))))


# ---- the command line --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    """lenet5 exported to ONNX (an imported model: no zoo name, no embedded data) and 48 calibration samples."""
    if not HAVE_ONNX:
        pytest.skip("needs the onnx package")
    folder = tmp_path_factory.mktemp("lenet")
    refquant.export_onnx(_lenet(), folder / "lenet.onnx")
    np.save(folder / "calib.npy", _digits(48))
    return folder


def test_quantize_onnx_model_with_npy_data_to_rq_and_qdq_onnx(lenet_onnx, tmp_path, capsys):
    """The .onnx output is a QDQ graph onnxruntime runs, close to refquant's fake-quant model on the same data."""
    if not HAVE_ORT:
        pytest.skip("needs onnxruntime")
    import onnx
    import onnxruntime as ort
    args = ["quantize", str(lenet_onnx / "lenet.onnx"), "--data", str(lenet_onnx / "calib.npy"),
            "--batch-size", "16", "--algo", "hist"]
    assert main(args + ["--out", str(tmp_path / "q.rq")]) == 0
    captured = capsys.readouterr()
    assert "saved" in captured.out and "q.rq" in captured.out
    assert "calibration data: 3 batches, 48 samples" in captured.err
    # hist reads the batches once when every tensor's kept tail decides its threshold (LeNet's do)
    assert "calibration pass 1: batch 3/3" in captured.err and "calibration pass 2" not in captured.err
    assert main(args + ["--out", str(tmp_path / "q.onnx"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "q.onnx" in captured.out
    types = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= types
    q = refquant.load(tmp_path / "q.rq")
    x = _digits(200)[100:]
    ref = q.run({"x": x})[q.outputs[0]]
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # ties round differently (half away from zero vs half to even): a few LSB on the logits, same classes
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.97
    # inspect the quantized file against the ONNX FP32 model on the same data
    assert main(["inspect", str(tmp_path / "q.rq"), "--fp32", str(lenet_onnx / "lenet.onnx"),
                 "--data", str(lenet_onnx / "calib.npy"), "--batch-size", "24"]) == 0
    out = capsys.readouterr().out
    assert "output SQNR dB" in out and "| conv2d_0 | conv2d | x |" in out


def test_quantize_image_folder_with_grayscale_model(lenet_onnx, tmp_path, capsys):
    """Digits saved as PNG files: read as grayscale for the 1-channel input, scaled by 1/255."""
    folder = tmp_path / "digits"
    folder.mkdir()
    x = _digits(12)
    for i, img in enumerate(x):
        Image.fromarray(np.round(img[0] * 255).astype(np.uint8), "L").save(folder / f"{i:02d}.png")
    feeds = files.load_feeds(refquant.import_onnx(str(lenet_onnx / "lenet.onnx")), folder, batch_size=12)
    assert feeds[0]["x"].shape == (12, 1, 16, 16) and np.abs(feeds[0]["x"] - x).max() <= 0.5 / 255 + 1e-6
    out = tmp_path / "q.rq"
    assert main(["quantize", str(lenet_onnx / "lenet.onnx"), "--data", str(folder), "--batch-size", "4",
                 "--algo", "abs_max", "--out", str(out)]) == 0
    assert refquant.load(out).meta["quantization"]["algo"] == "abs_max"


def test_file_model_without_data_is_a_usage_error(lenet_onnx, tmp_path, capsys):
    code = main(["quantize", str(lenet_onnx / "lenet.onnx"), "--out", str(tmp_path / "q.rq")])
    _one_error_line(capsys, code, 2, "give --data")
    assert not (tmp_path / "q.rq").exists()


@pytest.mark.parametrize("extra,code,words", [
    (["--data", "{d}/nothing*.npy"], 2, "matches no data file"),
    (["--data", "{d}/nan.npy"], 1, "nan.npy: 1 NaN/Inf values"),
    (["--data", "{d}/wide.npy"], 1, "wide.npy: input 'x' is (?, 1, 16, 16)"),
    (["--data", "{d}/pickled.npy"], 1, "pickle"),
    (["--data", "{d}/calib.npy", "--method", "dynamic"], 2, "--method dynamic reads none"),
])
def test_bad_data_on_the_command_line(lenet_onnx, tmp_path, capsys, extra, code, words):
    x = _digits(4)
    bad = x.copy()
    bad[1, 0, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "wide.npy", np.ones((2, 1, 16, 17), np.float32))
    np.save(tmp_path / "pickled.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    np.save(tmp_path / "calib.npy", x)
    out = tmp_path / "q.rq"
    args = ["quantize", str(lenet_onnx / "lenet.onnx"), "--out", str(out)] + [a.format(d=tmp_path) for a in extra]
    _one_error_line(capsys, main(args), code, words)
    assert not out.exists()


def test_zoo_name_wins_over_a_paddle_prefix(tmp_path, monkeypatch, capsys):
    """A file lenet5.json in the working folder (e.g. a report) does not turn the zoo name into a Paddle model."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet5.json").write_text("{}")
    assert main(["quantize", "lenet5", "--method", "dynamic", "--out", "q.rq"]) == 0
    assert "saved q.rq" in capsys.readouterr().out


def test_out_suffix_and_directory(lenet_onnx, tmp_path, capsys):
    model, data = str(lenet_onnx / "lenet.onnx"), str(lenet_onnx / "calib.npy")
    code = main(["quantize", model, "--data", data, "--out", str(tmp_path / "q.bin")])
    _one_error_line(capsys, code, 2, ".rq (refquant) or .onnx")
    with pytest.raises(SystemExit) as exc:
        main(["quantize", model, "--data", data, "--out", str(tmp_path)])
    assert exc.value.code == 2 and "is a directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unexportable_model_is_refused_before_calibrating(tmp_path, capsys):
    """--out .onnx checks every op has an ONNX mapping before the calibration runs."""
    if not HAVE_ONNX:
        pytest.skip("needs the onnx package")
    from refquant.io.onnx import supported_op_types
    assert "cross_entropy" not in supported_op_types()
    lenet = _lenet()
    model = Model(lenet.ops + [Op("softmax", [lenet.outputs[0]], ["prob"], {"axis": -1}, "sm"),
                               Op("cross_entropy", ["prob", "label"], ["loss"], {}, "ce")],
                  lenet.params, lenet.input_specs + [TensorSpec("label", (None, 1), "int64")], ["loss"])
    refquant.save(model, tmp_path / "m.rq")
    np.savez(tmp_path / "d.npz", x=_digits(4), label=np.zeros((4, 1), np.int64))
    code = main(["quantize", str(tmp_path / "m.rq"), "--data", str(tmp_path / "d.npz"),
                 "--out", str(tmp_path / "q.onnx")])
    _one_error_line(capsys, code, 1, "cross_entropy", "use .rq")
    assert not (tmp_path / "q.onnx").exists()
    assert main(["quantize", str(tmp_path / "m.rq"), "--data", str(tmp_path / "d.npz"), "--quiet",
                 "--out", str(tmp_path / "q.rq")]) == 0  # the same model to .rq


@pytest.mark.skipif(render.ppocr_model_path("cls") is None or not HAVE_ORT,
                    reason="needs rapidocr-onnxruntime's PP-OCR models and onnxruntime")
def test_ppocr_cls_onnx_and_images_to_qdq_onnx(tmp_path, capsys):
    """The README example: PP-OCR's direction classifier and a folder of text-line images to a QDQ ONNX file whose
    predictions onnxruntime gives as the FP32 model's."""
    import onnxruntime as ort
    _lines(tmp_path / "lines", 8)
    out = tmp_path / "cls.qdq.onnx"
    assert main(["quantize", render.ppocr_model_path("cls"), "--data", str(tmp_path / "lines"),
                 "--preset", "ppocr-cls", "--batch-size", "4", "--out", str(out)]) == 0
    assert "cls.qdq.onnx" in capsys.readouterr().out
    model = refquant.import_onnx(render.ppocr_model_path("cls"))
    (feed,) = files.load_feeds(model, tmp_path / "lines", batch_size=8, preprocess=files.preset("ppocr-cls"))
    fp32 = ort.InferenceSession(render.ppocr_model_path("cls"), providers=["CPUExecutionProvider"])
    q = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    a, b = fp32.run(None, feed)[0], q.run(None, feed)[0]
    assert np.array_equal(a.argmax(1), np.arange(8) % 2)
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 7 / 8 and np.abs(a - b).max() < 0.2


PADDLE_CNN = Path(__file__).parent / "data" / "paddle_models" / "cnn"


@pytest.mark.skipif(not (PADDLE_CNN / "fp32" / "model.pdmodel").exists(), reason="no Paddle model fixture")
def test_quantize_a_paddle_inference_model(tmp_path, capsys):
    """A Paddle inference model by folder, path prefix and PIR .json file, calibrated on .npy batches; the .onnx
    output runs in onnxruntime close to the .rq fake-quant model."""
    calib = np.load(PADDLE_CNN / "io.npz")["calib"]  # (batches, batch, 3, 16, 16)
    for i, batch in enumerate(calib):
        np.save(tmp_path / f"calib{i}.npy", batch)
    data = ["--data", str(tmp_path / "calib*.npy"), "--algo", "abs_max", "--op-types", "conv2d", "matmul", "--quiet"]
    assert main(["quantize", str(PADDLE_CNN / "fp32"), "--out", str(tmp_path / "q.rq")] + data) == 0
    assert main(["quantize", str(PADDLE_CNN / "fp32" / "model"), "--out", str(tmp_path / "prefix.rq")] + data) == 0
    assert main(["quantize", str(PADDLE_CNN / "fp32_pir" / "model.json"), "--out", str(tmp_path / "pir.rq")]
                + data) == 0
    q = refquant.load(tmp_path / "q.rq")
    x = np.load(PADDLE_CNN / "io.npz")["x"]
    ref = q.run({"x": x})[q.outputs[0]]
    for other in ("prefix.rq", "pir.rq"):
        o = refquant.load(tmp_path / other)
        assert np.abs(o.run({"x": x})[o.outputs[0]] - ref).max() < 1e-5
    assert q.meta["quantization"]["algo"] == "abs_max"
    if HAVE_ORT:
        import onnxruntime as ort
        assert main(["quantize", str(PADDLE_CNN / "fp32"), "--out", str(tmp_path / "q.onnx")] + data) == 0
        sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
        assert np.abs(sess.run(None, {q.inputs[0]: x})[0] - ref).max() < 0.02  # softmax probabilities
