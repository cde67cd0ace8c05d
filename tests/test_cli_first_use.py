"""``minigbp explain`` as a new user meets it, through the real command line: every input is
checked before any file is written, errors are one line, memory stays bounded, output names
never collide, and the progress bar never garbles what is printed."""

import os
import pty
import resource
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minigbp as mg


def minigbp(*argv, cwd, memory_gb=None, **kw):
    """Run ``python -m minigbp ARGV`` in ``cwd``, optionally under an address-space limit."""
    limit = None
    if memory_gb is not None:
        def limit():
            size = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "minigbp", *argv], cwd=cwd, capture_output=True, text=True,
                          preexec_fn=limit, env=env, timeout=120, **kw)


def one_line_error(res, *words):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "Errno" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minigbp explain: error: "), res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def rgb_model(tmp_path):
    """A small model file taking 3-channel images of any size (for --preprocess imagenet)."""
    model = mg.Sequential(mg.Conv2d(3, 4, 3, stride=4), mg.ReLU(), mg.AdaptiveAvgPool2d(1), mg.Flatten(),
                          mg.Linear(4, 3))
    path = tmp_path / "rgb.npz"
    mg.save(model, path)
    return path


@pytest.mark.parametrize("width", [5000, 100_000])
def test_extreme_aspect_ratio_is_refused_in_bounded_memory(tmp_path, rgb_model, width):
    Image.fromarray(np.zeros((1, width, 3), np.uint8)).save(tmp_path / "wide.png")
    res = minigbp("explain", "wide.png", "--model", str(rgb_model), "--preprocess", "imagenet", "--out", "out",
                  cwd=tmp_path, memory_gb=3)
    one_line_error(res, "wide.png", f"1x{width}", "aspect ratio")
    assert not (tmp_path / "out").exists()


def test_wide_but_sane_image_runs_under_the_memory_limit(tmp_path, rgb_model):
    Image.fromarray(np.full((40, 4000, 3), 90, np.uint8)).save(tmp_path / "strip.png")
    res = minigbp("explain", "strip.png", "--model", str(rgb_model), "--preprocess", "imagenet", "--mode",
                  "guided", "--out", "out", cwd=tmp_path, memory_gb=3)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "strip_guided.png").exists()


def test_a_target_beyond_the_classes_writes_nothing(tmp_path):
    res = minigbp("explain", "digits:0", "digits:1", "--target", "top:11", "--out", "out", cwd=tmp_path)
    one_line_error(res, "--target top:11", "class ranked 11", "10 classes")
    assert not (tmp_path / "out").exists()
    res = minigbp("explain", "digits:0", "--target", "neuron:features.3:5:40:4", "--out", "out", cwd=tmp_path)
    one_line_error(res, "--target neuron:features.3:5:40:4", "y 40 out of range")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["missing.png", "broken.png"])
def test_a_bad_image_among_good_ones_writes_nothing(tmp_path, bad):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    res = minigbp("explain", "digits:0", "digits:1", bad, "--out", "out", cwd=tmp_path)
    one_line_error(res, bad)
    assert not (tmp_path / "out").exists()
    assert res.stdout == ""  # nothing was explained either


def test_same_file_names_in_different_folders_do_not_overwrite(tmp_path):
    for folder, value in (("a", 40), ("b", 200)):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(tmp_path / folder / "x.png")
    res = minigbp("explain", "a/x.png", "b/x.png", "a/x.png", "--mode", "guided", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    files = sorted(os.listdir(tmp_path / "out"))
    assert files == ["a_x-2_comparison.png", "a_x-2_guided.png", "a_x_comparison.png", "a_x_guided.png",
                     "b_x_comparison.png", "b_x_guided.png"]
    assert f"wrote {len(files)} files to out" in res.stdout


def test_no_progress_bar_in_logs(tmp_path):
    res = minigbp("explain", "digits:0", "digits:1", "--mode", "guided", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    assert "\r" not in res.stdout


def test_progress_bar_in_a_terminal_is_cleared_before_results(tmp_path):
    """On a terminal, what the user sees (each line after its last carriage return, with the
    'erase to end of line' codes applied) is exactly the result lines."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "minigbp", "explain", "digits:0", "digits:1", "digits:2",
                             "--mode", "guided", "--out", "out"], cwd=tmp_path, stdout=follower,
                            stderr=follower, stdin=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    raw = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process has finished writing
            break
        if not chunk:
            break
        raw += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    text = raw.decode()
    assert "1/3" in text  # the bar was shown
    seen = [line.split("\r")[-1].replace("\x1b[K", "") for line in text.replace("\r\n", "\n").split("\n")]
    seen = [line for line in seen if line]
    assert len(seen) == 4 and all(line.startswith(f"digits:{k}: predicted") for k, line in enumerate(seen[:3]))
    assert seen[3] == "wrote 6 files to out"


@pytest.mark.parametrize("argv, words", [
    (["--model", "vgg16", "--weights", "missing.pth"], ["--weights missing.pth: no such file"]),
    (["--model", "vgg16", "--weights", "folder"], ["--weights folder: is a folder"]),
    (["--out", "afile"], ["--out afile: exists and is not a folder"]),
    (["--gradcam-layer", "nope"], ["--gradcam-layer nope", "no layer named 'nope'"]),
])
def test_bad_arguments_are_one_clear_line(tmp_path, argv, words):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("")
    argv = ["explain", "digits:0", *argv] + ([] if "--out" in argv else ["--out", "out"])
    one_line_error(minigbp(*argv, cwd=tmp_path), *words)
    assert not (tmp_path / "out").exists()


def test_smooth_must_be_a_whole_number(tmp_path):
    res = minigbp("explain", "digits:0", "--smooth", "abc", "--out", "out", cwd=tmp_path)
    assert res.returncode == 2
    assert "argument --smooth: expected a whole number >= 0, got 'abc'" in res.stderr
    assert "_count" not in res.stderr


def test_bad_weights_are_read_before_the_model_is_built(tmp_path):
    """VGG16 takes over 500 MB to build; a bad file is refused first, well under that."""
    (tmp_path / "BAD").write_text("bad\n")
    res = minigbp("explain", "digits:0", "--model", "vgg16", "--weights", "BAD", "--out", "out", cwd=tmp_path,
                  memory_gb=0.5)
    one_line_error(res, "BAD: not a recognised weights file")


def test_a_photo_sent_to_the_digits_model_is_warned_about(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((300, 400, 3)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(tmp_path / "gray.png")  # gray paper: no warning
    res = minigbp("explain", "photo.png", "gray.png", "--mode", "guided", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0
    assert res.stderr.count("warning") == 1
    assert "photo.png is a 400x300 colour image" in res.stderr and "--model" in res.stderr


def test_version_and_module_entry_point(tmp_path):
    for argv in (["minigbp", "--version"], [sys.executable, "-m", "minigbp", "--version"]):
        res = subprocess.run(argv, capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.strip() == f"minigbp {mg.__version__}"
