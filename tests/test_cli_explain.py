"""``minigbp explain``: every path on the shipped digits model, outputs checked."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minigbp as mg
from minigbp.cli import main


def png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_shipped_digits_all_modes(tmp_path, capsys):
    code, out, err = run(["explain", "digits:0", "digits:1", "--out", str(tmp_path)], capsys)
    assert code == 0
    images, labels = mg.zoo.digits_test_data()
    logits = mg.zoo.digits()(mg.zoo.digits_preprocess(images[:2]))
    for i in range(2):
        assert f"digits:{i}: predicted {logits[i].argmax()}" in out
        assert f"[label {labels[i]}]" in out
        for method in ("vanilla", "deconvnet", "guided", "gradcam", "guided-gradcam"):
            img = png(tmp_path / f"digits-{i}_{method}.png")
            assert img.shape[:2] == (256, 256)  # 32x32 input enlarged 8x
            assert img.std() > 1  # not a constant picture
        fig = png(tmp_path / f"digits-{i}_comparison.png")
        assert fig.shape[1] == 6 * 300  # six panels of 3 inches at 100 dpi
    assert not np.array_equal(png(tmp_path / "digits-0_vanilla.png"), png(tmp_path / "digits-0_guided.png"))
    assert err == ""  # no progress bar when stderr is not a terminal (tests/test_cli_first_use.py)
    assert "wrote 12 files" in out


def test_explain_image_file_single_mode_and_targets(tmp_path, capsys):
    paper = np.full((40, 40), 255, np.uint8)
    paper[5:35, 17:23] = 0  # a dark "1" on white paper
    Image.fromarray(paper).save(tmp_path / "one.png")
    code, out, err = run(["explain", str(tmp_path / "one.png"), "--mode", "guided", "--target", "top:2",
                          "--norm", "percentile", "--gray", "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    files = sorted(os.listdir(tmp_path / "o"))
    assert files == ["one_class-ranked-2_comparison.png", "one_class-ranked-2_guided.png",
                     "one_top-1-class_comparison.png", "one_top-1-class_guided.png"]
    assert err == ""  # one image: no progress bar
    a, b = png(tmp_path / "o/one_top-1-class_guided.png"), png(tmp_path / "o/one_class-ranked-2_guided.png")
    assert not np.array_equal(a, b)


def test_explain_layer_targets_skip_gradcam(tmp_path, capsys):
    code, out, _ = run(["explain", "digits:3", "--target", "neuron:features.3:5:4:4",
                        "--out", str(tmp_path)], capsys)
    assert code == 0
    names = sorted(os.listdir(tmp_path))
    assert names == ["digits-3_comparison.png", "digits-3_deconvnet.png", "digits-3_guided.png",
                     "digits-3_vanilla.png"]  # Grad-CAM explains classes only
    # a single neuron's projection is confined to its receptive field
    g = mg.explain.attribute(mg.zoo.digits(), mg.zoo.digits_preprocess(mg.zoo.digits_test_data()[0][3:4]),
                             "neuron:features.3:5:4:4", "deconvnet")
    rows, cols = np.nonzero(np.abs(g[0, 0]) > 0)
    assert rows.min() >= 4 * 2 - 4 and rows.max() <= 4 * 2 + 5


def test_explain_smoothgrad_and_saved_model(tmp_path, capsys):
    mg.save(mg.zoo.digits(), tmp_path / "digits_copy.npz")
    code, out, _ = run(["explain", "digits:2", "--model", str(tmp_path / "digits_copy.npz"),
                        "--preprocess", "digits", "--mode", "vanilla", "--smooth", "3", "--out",
                        str(tmp_path / "o")], capsys)
    assert code == 0 and (tmp_path / "o/digits-2_vanilla.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["explain", "digits:9999", "--out", "{tmp}"], "the shipped test split has 360 digits"),
    (["explain", "nope.png", "--out", "{tmp}"], "nope.png: no such file"),
    (["explain", "digits:0", "--model", "vgg16", "--out", "{tmp}"], "needs --weights"),
    (["explain", "digits:0", "--model", "resnet", "--out", "{tmp}"], "not digits, not one of"),
    (["explain", "digits:0", "--target", "banana", "--out", "{tmp}"], "bad target"),
    (["explain", "digits:0", "--target", "12", "--out", "{tmp}"], "out of range"),
    (["explain", "digits:0", "--target", "layer:nope", "--out", "{tmp}"], "no layer named 'nope'"),
])
def test_explain_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_explain_bad_image_file(tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, _, err = run(["explain", str(tmp_path / "bad.jpg"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bad.jpg: not a readable image" in err


def test_help_is_complete():
    for argv in (["--help"], ["explain", "--help"]):
        res = subprocess.run([sys.executable, "-m", "minigbp", *argv], capture_output=True, text=True)
        assert res.returncode == 0
    text = res.stdout
    for word in ("--model", "--weights", "--mode", "--target", "--preprocess", "--preset", "--out", "--smooth", "--norm",
                 "neuron:NAME:C:Y:X", "digits:N", "examples:"):
        assert word in text


def test_console_script_runs(tmp_path):
    res = subprocess.run(["minigbp", "explain", "digits:4", "--mode", "guided", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "digits-4_guided.png").exists()


def test_explain_library_conventions(tmp_path, capsys):
    """--preset draws the library's post-processed signal under its conventions."""
    code, _, _ = run(["explain", "digits:0", "--mode", "guided", "--preset", "torchray", "--out",
                      str(tmp_path / "t")], capsys)
    assert code == 0
    model = mg.zoo.digits()
    x = mg.zoo.digits_preprocess(mg.zoo.digits_test_data()[0][:1])
    top = int(model(x).argmax())
    want = mg.postprocess(mg.backprop(model, x, top, "guided", preset="torchray"), "max-abs")[0]
    expected = mg.visualize.to_display(want, "minmax")
    got = png(tmp_path / "t/digits-0_guided.png")[::8, ::8, 0] / 255  # undo the 8x enlargement
    assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-9
    with pytest.raises(SystemExit) as e:  # argparse refuses an unknown preset
        main(["explain", "digits:0", "--preset", "nope", "--out", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_explain_library_draws_only_its_methods(tmp_path, capsys):
    code, out, _ = run(["explain", "digits:0", "--preset", "tf-keras-vis", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == ["digits-0_comparison.png", "digits-0_gradcam.png",
                                            "digits-0_vanilla.png"]
    # tf-keras-vis's display is already in [0, 1]: drawn as it is, not normalized again
    model = mg.zoo.digits()
    x = mg.zoo.digits_preprocess(mg.zoo.digits_test_data()[0][:1])
    want = mg.postprocess(mg.backprop(model, x, int(model(x).argmax()), "vanilla", preset="tf-keras-vis"),
                          "abs-max-minmax")[0, 0]
    got = png(tmp_path / "digits-0_vanilla.png")[::8, ::8, 0] / 255
    assert np.abs(got - want).max() <= 0.5 / 255 + 1e-6
    code, _, err = run(["explain", "digits:0", "--preset", "tf-keras-vis", "--mode", "guided",
                        "--out", str(tmp_path)], capsys)
    assert code == 2 and "has no guided mode" in err
