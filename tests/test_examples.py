"""Every script in examples/ that draws or explains runs here, small, and its outputs are checked.

Each example runs in a subprocess (``sys.executable``, the repository on ``PYTHONPATH``) with
``tmp_path`` as ``--out``: files exist, PNGs have the sizes the options ask for, maps are not
constant, guided differs from vanilla (on the raw arrays each example saves as .npz), the
walkthrough's own asserts pass, and the sanity check's unrandomized row is exactly 1.0.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minigbp as mg

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run(script, *args, cwd=None):
    """Run ``examples/<script>`` with ``args``; return the CompletedProcess (stdout, stderr as text)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def png(path):
    """(width, height) and the pixels as float array of a PNG that must exist."""
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size, np.asarray(im.convert("RGB"), dtype=np.float64)


def figure_size(width_in, height_in, dpi=100):
    return round(width_in * dpi), round(height_in * dpi)


def assert_size(actual, expected):
    assert abs(actual[0] - expected[0]) <= 1 and abs(actual[1] - expected[1]) <= 1, (actual, expected)


def wrote(stdout):
    return {pathlib.Path(line.split("wrote ", 1)[1]) for line in stdout.splitlines() if line.startswith("wrote ")}


# --------------------------------------------------------------------- (a) digits

def test_digits_three_modes(tmp_path):
    out = ok(run("digits_three_modes.py", "--indices", 0, 5, "--scale", 2, "--panel-size", 1.0,
                 "--out", tmp_path))
    methods = ("input", "vanilla", "deconvnet", "guided", "gradcam", "guided-gradcam")
    expected = {tmp_path / f"digit-{i}_{m}.png" for i in (0, 5) for m in methods + ("comparison",)}
    expected |= {tmp_path / "digits_grid.png", tmp_path / "digits_maps.npz"}
    assert wrote(out) == expected
    for i in (0, 5):
        for m in methods:
            size, pixels = png(tmp_path / f"digit-{i}_{m}.png")
            assert size == (64, 64)  # 32 x --scale 2
            assert pixels.std() > 0, f"digit {i}, {m}: constant picture"
        size, _ = png(tmp_path / f"digit-{i}_comparison.png")
        assert_size(size, figure_size(6 * 1.0, 1.0 + 0.5))  # six panels, title
    size, pixels = png(tmp_path / "digits_grid.png")
    assert_size(size, figure_size(6 * 1.0, 2 * 1.0 + 0.4))  # rows = 2 digits, columns = 6 panels
    assert pixels.std() > 0

    with np.load(tmp_path / "digits_maps.npz") as z:
        maps = {k: z[k] for k in z.files}
    images, labels = mg.zoo.digits_test_data()
    assert maps["indices"].tolist() == [0, 5]
    assert maps["labels"].tolist() == labels[[0, 5]].tolist()
    np.testing.assert_array_equal(maps["x"], mg.zoo.digits_preprocess(images[[0, 5]]))
    for m in ("vanilla", "deconvnet", "guided", "gradcam", "guided_gradcam"):
        assert maps[m].shape == (2, 1, 32, 32) and maps[m].dtype == np.float32
        assert all(maps[m][n].std() > 0 for n in range(2)), m
    assert not np.allclose(maps["guided"], maps["vanilla"])
    assert not np.allclose(maps["deconvnet"], maps["vanilla"])
    assert not np.allclose(maps["guided"], maps["deconvnet"])
    assert (maps["gradcam"] >= 0).all()  # a ReLU'd heat map
    # the saved signals are the library's, for the printed targets
    model = mg.zoo.digits()
    for m in ("vanilla", "deconvnet", "guided"):
        np.testing.assert_array_equal(maps[m], mg.backprop(model, maps["x"], maps["targets"], mode=m))
    assert maps["targets"].tolist() == model(maps["x"]).argmax(axis=1).tolist()  # --target pred


def test_digits_three_modes_explains_labels_on_request(tmp_path):
    out = ok(run("digits_three_modes.py", "--count", 1, "--target", "label", "--scale", 1, "--out", tmp_path))
    with np.load(tmp_path / "digits_maps.npz") as z:
        assert z["targets"].tolist() == z["labels"].tolist() == [0]
    assert "explaining class 0" in out


# --------------------------------------------------------------------- (b) photo

WEIGHTS_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


@pytest.mark.parametrize("args, what", [
    ((), "No VGG16 weights given"),
    (("--weights", "no_such_vgg16.pth"), "Weights file not found: no_such_vgg16.pth"),
])
def test_photo_without_weights_explains_and_exits_0(tmp_path, args, what):
    proc = run("photo_three_modes.py", *args, "--out", tmp_path / "out", cwd=tmp_path)
    out = ok(proc)
    assert what in out
    for needle in (WEIGHTS_URL, "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "--weights", "--random-weights",
                   "never\ndownloads"):
        assert needle.replace("\n", " ") in out.replace("\n", " "), needle
    assert not (tmp_path / "out").exists()  # nothing written, nothing downloaded
    assert "wrote" not in out


def check_photo_outputs(tmp_path, out, stem, size):
    names = ("input", "vanilla", "deconvnet", "guided")
    assert wrote(out) == {tmp_path / f"{stem}_{n}.png" for n in names + ("comparison",)} | {
        tmp_path / f"{stem}_maps.npz"}
    for n in names:
        shape, pixels = png(tmp_path / f"{stem}_{n}.png")
        assert shape == (size, size), n
        assert pixels.std() > 0, f"{n}: constant picture"
    assert_size(png(tmp_path / f"{stem}_comparison.png")[0], figure_size(4 * 3.0, 3.0 + 0.5))
    top = re.search(r"top-5 predicted classes \(ImageNet index: logit\): (.*)", out)
    assert top, out
    printed = [int(c.split(":")[0]) for c in top.group(1).split(", ")]
    with np.load(tmp_path / f"{stem}_maps.npz") as z:
        maps = {k: z[k] for k in z.files}
    assert len(printed) == 5 and printed == maps["top5"].tolist()
    assert printed == np.argsort(-maps["logits"][0], kind="stable")[:5].tolist()
    assert int(maps["target"]) == printed[0]
    for m in ("vanilla", "deconvnet", "guided"):
        assert maps[m].shape == (1, 3, size, size) and maps[m].std() > 0, m
    assert not np.allclose(maps["guided"], maps["vanilla"], rtol=1e-3, atol=0)
    assert not np.allclose(maps["deconvnet"], maps["vanilla"], rtol=1e-3, atol=0)
    return maps


def test_photo_random_weights_small(tmp_path):
    out = ok(run("photo_three_modes.py", "--random-weights", "--size", 64, "--out", tmp_path))
    assert "random weights" in out and "meaningless" in out
    maps = check_photo_outputs(tmp_path, out, "grace_hopper", 64)
    # the shipped photo went through the imagenet preset: values are standardized, not 0..255
    assert maps["x"].shape == (1, 3, 64, 64) and -3 < maps["x"].mean() < 3


def test_photo_random_weights_on_a_given_image(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:90, 0:120]
    img = np.stack([xx * 2, yy * 2, (xx + yy) % 256], axis=2) + rng.integers(0, 30, (90, 120, 3))
    path = tmp_path / "stripes.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    out = ok(run("photo_three_modes.py", "--random-weights", "--size", 32, "--image", path,
                 "--out", tmp_path, "--gray", "--preprocess", "caffe"))
    assert "preprocessing: caffe" in out
    maps = check_photo_outputs(tmp_path, out, "stripes", 32)
    # Caffe preprocessing: BGR values 0..255 minus the ImageNet means, not standardized
    assert maps["x"].max() > 20 and maps["x"].min() >= -123.68 - 1e-3


# --------------------------------------------------------------------- (c) walkthrough

def test_walkthrough_runs_its_checks_and_names_every_layer(tmp_path):
    out = ok(run("walkthrough.py", "--out", tmp_path, "--scale", 4))
    table = out.split("2. Forward values")[0]
    for name, kind, shape_in, shape_out in [
        ("conv1", "Conv2d", "(1, 1, 6, 6)", "(1, 2, 6, 6)"), ("relu1", "ReLU", "(1, 2, 6, 6)", "(1, 2, 6, 6)"),
        ("pool", "MaxPool2d", "(1, 2, 6, 6)", "(1, 2, 3, 3)"), ("conv2", "Conv2d", "(1, 2, 3, 3)", "(1, 2, 2, 2)"),
        ("relu2", "ReLU", "(1, 2, 2, 2)", "(1, 2, 2, 2)"), ("flat", "Flatten", "(1, 2, 2, 2)", "(1, 8)"),
        ("fc", "Linear", "(1, 8)", "(1, 3)"),
    ]:
        assert re.search(rf"^\s+{name}\s+{kind}\s+{re.escape(shape_in)}\s+{re.escape(shape_out)}", table, re.M), name
    for mode in ("vanilla", "deconvnet", "guided"):
        assert f"Backward in mode {mode!r}" in out
        assert f"mode={mode!r}): checked" in out
    # every layer appears in every backward walk
    for section in out.split("3. Backward in mode ")[1:]:
        for name in ("fc", "flat", "relu2", "conv2", "pool", "relu1", "conv1"):
            assert re.search(rf"^\s+{name}\s", section, re.M), name
    assert "All checks passed" in out
    assert wrote(out) == {tmp_path / "walkthrough_signals.npz", tmp_path / "walkthrough_input_signals.png"}
    size, pixels = png(tmp_path / "walkthrough_input_signals.png")
    assert_size(size, figure_size(4 * 3.0, 3.0 + 0.5))
    assert pixels.std() > 0

    with np.load(tmp_path / "walkthrough_signals.npz") as z:
        saved = {k: z[k] for k in z.files}
    signals = {m: saved[f"{m}_input_signal"] for m in mg.MODES}
    assert all(s.shape == (1, 1, 6, 6) and np.array_equal(s, np.round(s)) for s in signals.values())
    assert not np.array_equal(signals["guided"], signals["vanilla"])
    # the rules, checked on the saved ReLU signals (x is the ReLU's forward input)
    wt = load_walkthrough()
    x1 = wt.build_model()["conv1"](wt.X)
    R = saved["guided_relu1_arriving"]
    np.testing.assert_array_equal(saved["guided_relu1_sent"], R * (x1 > 0) * (R > 0))
    R = saved["deconvnet_relu1_arriving"]
    np.testing.assert_array_equal(saved["deconvnet_relu1_sent"], R * (R > 0))
    R = saved["vanilla_relu1_arriving"]
    np.testing.assert_array_equal(saved["vanilla_relu1_sent"], R * (x1 > 0))


def load_walkthrough():
    from example_scripts import load_example

    return load_example("walkthrough.py", "walkthrough_example")


def test_walkthrough_asserts_are_live(tmp_path, monkeypatch):
    """If the ReLU ignored the mode, the walkthrough must fail, not just print."""
    wt = load_walkthrough()
    original = mg.ReLU.backward
    monkeypatch.setattr(mg.ReLU, "backward", lambda self, dout, cache, mode="vanilla", *rest:
                        original(self, dout, cache, "vanilla", *rest))
    with pytest.raises(AssertionError, match="should differ"):
        wt.main(["--out", str(tmp_path)])


# --------------------------------------------------------------------- (d) sanity check

def test_sanity_check_table_and_figure(tmp_path):
    out = ok(run("sanity_check.py", "--count", 3, "--panel-size", 1.0, "--out", tmp_path))
    assert "3 held-out digits" in out and "random state 0" in out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("randomized (cumulative)"))
    assert lines[head].split()[-3:] == ["vanilla", "deconvnet", "guided"]
    rows = [line.split() for line in lines[head + 1:head + 7]]
    names = [r[0] for r in rows]
    assert names == ["(none)", "classifier.2", "classifier.0", "features.6", "features.3", "features.0"]
    printed = np.array([[float(v) for v in r[1:]] for r in rows])
    assert printed[0].tolist() == [1.0, 1.0, 1.0]
    assert (printed[1:] < 1).all()

    assert wrote(out) == {tmp_path / n for n in ("sanity_maps.png", "sanity_table.md", "sanity.npz")}
    with np.load(tmp_path / "sanity.npz") as z:
        res = {k: z[k] for k in z.files}
    assert res["layers"].tolist() == names and res["modes"].tolist() == ["vanilla", "deconvnet", "guided"]
    assert res["table"].shape == (6, 3) and res["per_digit"].shape == (6, 3, 3)
    assert (res["table"][0] == 1.0).all() and (res["per_digit"][0] == 1.0).all()  # exactly 1
    np.testing.assert_allclose(res["table"], printed, atol=5e-4)
    for m in ("vanilla", "deconvnet", "guided"):
        assert res[f"maps_{m}"].shape == (6, 3, 32, 32)
        assert all(res[f"maps_{m}"][s, k].std() > 0 for s in range(6) for k in range(3)), m
    assert not np.allclose(res["maps_guided"][0], res["maps_vanilla"][0])
    # the API, called here directly, gives the same table
    from minigbp.explain import cascading_randomization
    images, _ = mg.zoo.digits_test_data()
    x = mg.zoo.digits_preprocess(images[res["indices"]])
    api = cascading_randomization(mg.zoo.digits(), x, random_state=0)
    np.testing.assert_allclose([[r[m] for m in ("vanilla", "deconvnet", "guided")] for r in api], res["table"],
                               rtol=0, atol=1e-12)

    size, pixels = png(tmp_path / "sanity_maps.png")
    assert_size(size, figure_size(4 * 1.0, 6 * 1.0 + 0.5))  # rows = 6 steps, columns = input + 3 modes
    assert pixels.std() > 0
    md = (tmp_path / "sanity_table.md").read_text()
    assert "| (none) | 1.000 | 1.000 | 1.000 |" in md and "3 held-out digits, random state 0" in md


def test_benchmark_gemm_limit_counts_the_products_of_each_case():
    """The flops behind the benchmark's GEMM limit: VGG16's 15.4 G multiply-adds per image in its
    convolutions plus 124 M in its classifier, forward and the input signal's backward."""
    from example_scripts import load_example

    bench = load_example("benchmark.py", "benchmark_example")
    vgg_conv = sum(c_out * c_in * 9 * hw * hw for c_in, c_out, hw in
                   [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56),
                    (256, 256, 56), (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28),
                    (512, 512, 14), (512, 512, 14), (512, 512, 14)])
    vgg_fc = 512 * 7 * 7 * 4096 + 4096 * 4096 + 4096 * 1000
    assert bench.case_flops("vgg16") == 2 * 2 * (vgg_conv + vgg_fc)
    small = 64 * (32 * 3 * 9 * 32 * 32 + 32 * 32 * 9 * 32 * 32 + 64 * 32 * 9 * 16 * 16 + 64 * 64 * 9 * 16 * 16
                  + 64 * 8 * 8 * 256 + 256 * 256 + 256 * 10)
    assert bench.case_flops("small") == 2 * 2 * small


def test_benchmark_child_runs_the_fast_path_and_the_reference(capsys):
    """One timed pass of the small case per side of ``--reference``: each child prints its JSON."""
    from example_scripts import load_example

    bench = load_example("benchmark.py", "benchmark_example")
    for reference in (False, True):
        bench.child("minigbp", "small", "float32", 1, reference)
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["median_s"] > 0 and result["peak_mb"] > 0
