"""``minigbp convert``: in-process through ``minigbp.cli.main`` and once as the installed
console script.

The round trip writes torchvision's VGG11 module structure by hand in torch, saves its
state dict with ``torch.save``, converts it with ``--arch vgg11`` and checks that
``mg.load`` gives a model whose logits equal torch's.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minigbp as mg
from minigbp.io import convert as convert_mod
from minigbp.cli import main


def small_model():
    mg.manual_seed(0)
    return mg.Sequential(features=mg.Sequential(mg.Conv2d(3, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2)),
                         flatten=mg.Flatten(), classifier=mg.Sequential(mg.Linear(4 * 4 * 4, 5)))


def run_cli(capsys, *argv):
    status = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def vgg11_shapes(num_classes=1000):
    """Parameter shapes of torchvision's vgg11, written out from its config (no model built)."""
    shapes, c, i = {}, 3, 0
    for v in mg.zoo.VGG_CONFIGS["vgg11"]:
        if v == "M":
            i += 1
        else:
            shapes[f"features.{i}.weight"], shapes[f"features.{i}.bias"] = (v, c, 3, 3), (v,)
            c, i = v, i + 2
    for j, (n_in, n_out) in zip((0, 3, 6), ((512 * 7 * 7, 4096), (4096, 4096), (4096, num_classes))):
        shapes[f"classifier.{j}.weight"], shapes[f"classifier.{j}.bias"] = (n_out, n_in), (n_out,)
    return shapes


# ---------------------------------------------------------------------------------------
# Without --arch
# ---------------------------------------------------------------------------------------

def test_weights_only_with_a_note(tmp_path, capsys):
    sd = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "a.bias": np.ones(2, np.float64)}
    mg.save_weights(sd, tmp_path / "in.npz")
    status, out, err = run_cli(capsys, tmp_path / "in.npz", tmp_path / "out.npz")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("note: weights only, no architecture")
    assert lines[-1] == f"wrote {tmp_path / 'out.npz'}: 2 arrays, 8 parameters, " \
                        f"{os.path.getsize(tmp_path / 'out.npz'):,} bytes (weights only)"
    back = mg.load_weights(tmp_path / "out.npz")
    assert list(back) == list(sd) and all(np.array_equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype for k in sd)


def test_saved_minigbp_model_keeps_its_architecture(tmp_path, capsys):
    model = small_model()
    mg.save(model, tmp_path / "m.npz")
    status, out, _ = run_cli(capsys, tmp_path / "m.npz", tmp_path / "copy.npz")
    assert status == 0 and out.strip().endswith("(architecture of SRC included)")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.array_equal(mg.load(tmp_path / "copy.npz")(x), model(x))


def test_safetensors_source(tmp_path, capsys):
    import json
    import struct
    w = np.arange(4, dtype=np.float32)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    (tmp_path / "t.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + w.tobytes())
    status, out, _ = run_cli(capsys, tmp_path / "t.safetensors", tmp_path / "t.npz")
    assert status == 0 and "1 arrays, 4 parameters" in out
    assert np.array_equal(mg.load_weights(tmp_path / "t.npz")["w"], w)


# ---------------------------------------------------------------------------------------
# --arch: all mismatches at once, nothing written
# ---------------------------------------------------------------------------------------

def test_arch_mismatches_listed_all_and_nothing_written(tmp_path, capsys):
    shapes = vgg11_shapes()
    sd = {k: np.zeros(s, np.float32) for k, s in shapes.items() if k.startswith("features")}
    del sd["features.3.bias"]                                  # missing
    sd["features.0.weight"] = np.zeros((64, 3, 5, 5), np.float32)  # wrong shape
    sd["fc.weight"] = np.zeros((2, 2), np.float32)             # unexpected
    sd["features.6.bias"] = np.zeros(256, np.int64)            # not floating point
    mg.save_weights(sd, tmp_path / "bad.npz")
    dst = tmp_path / "out.npz"
    status, out, err = run_cli(capsys, tmp_path / "bad.npz", dst, "--arch", "vgg11")
    assert status == 2 and out == "" and not dst.exists()
    assert "does not match vgg11: 10 problem(s); nothing was written" in err
    for line in ["missing key 'features.3.bias' (shape (128,) in vgg11)",
                 "unexpected key 'fc.weight' (shape (2, 2))",
                 "'features.0.weight': shape (64, 3, 5, 5) in bad.npz, (64, 3, 3, 3) in vgg11",
                 "'features.6.bias': dtype int64 is not floating point"]:
        assert line in err
    for k in ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias",
              "classifier.6.weight", "classifier.6.bias"):
        assert f"missing key {k!r}" in err
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".minigbp-convert-")]  # no temp left


def test_existing_dst_untouched_on_error(tmp_path, capsys):
    mg.save_weights({"x": np.zeros(3, np.float32)}, tmp_path / "small.npz")
    dst = tmp_path / "keep.npz"
    dst.write_bytes(b"precious")
    status, _, err = run_cli(capsys, tmp_path / "small.npz", dst, "--arch", "alexnet")
    assert status == 2 and "does not match alexnet" in err and "unexpected key 'x'" in err
    assert dst.read_bytes() == b"precious"


def test_num_classes_hint(tmp_path, capsys):
    """Only the classifier's last layer differs: the error suggests --num-classes."""
    model = mg.zoo.alexnet(num_classes=7)
    mg.save_weights(model.state_dict(), tmp_path / "a7.npz")
    status, _, err = run_cli(capsys, tmp_path / "a7.npz", tmp_path / "o.npz", "--arch", "alexnet")
    assert status == 2 and "2 problem(s)" in err and "--num-classes 7?" in err
    assert not (tmp_path / "o.npz").exists()
    status, out, _ = run_cli(capsys, tmp_path / "a7.npz", tmp_path / "o.npz", "--arch", "alexnet",
                             "--num-classes", "7")
    assert status == 0 and out.strip().endswith("(alexnet architecture included)")
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    assert np.array_equal(mg.load(tmp_path / "o.npz")(x), model(x))


def test_unknown_arch_and_bad_options_are_usage_errors(tmp_path, capsys):
    for argv in (["--arch", "resnet9"], ["--num-classes", "0"], ["--flatten-hw", "7"]):
        with pytest.raises(SystemExit) as e:
            main(["convert", str(tmp_path / "a"), str(tmp_path / "b"), *argv])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'resnet9'" in err and "expected HxW" in err


def test_io_errors(tmp_path, capsys):
    mg.save_weights({"x": np.zeros(3, np.float32)}, tmp_path / "s.npz")
    status, _, err = run_cli(capsys, tmp_path / "absent.pth", tmp_path / "o.npz")
    assert status == 2 and "absent.pth" in err
    status, _, err = run_cli(capsys, tmp_path / "s.npz", tmp_path / "no" / "such" / "o.npz")
    assert status == 2 and "does not exist" in err
    status, _, err = run_cli(capsys, tmp_path / "s.npz", tmp_path)
    assert status == 2 and "is a folder" in err
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 32)
    status, _, err = run_cli(capsys, tmp_path / "junk.pth", tmp_path / "o.npz")
    assert status == 2 and "junk.pth: not a recognised weights file" in err
    assert not (tmp_path / "o.npz").exists()


def test_failure_while_writing_leaves_nothing(tmp_path, capsys, monkeypatch):
    mg.save_weights({"x": np.zeros(3, np.float32)}, tmp_path / "s.npz")

    def half_written(state_dict, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half")
        raise ValueError("disk full (simulated)")

    monkeypatch.setattr(convert_mod, "save_weights", half_written)
    status, _, err = run_cli(capsys, tmp_path / "s.npz", tmp_path / "o.npz")
    assert status == 2 and "disk full" in err
    assert sorted(os.listdir(tmp_path)) == ["s.npz"]


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for needle in ("SRC", "DST", "--arch", "--num-classes", "--flatten-hw", "examples:",
                   "minigbp convert vgg16-397923af.pth vgg16.npz --arch vgg16",
                   ".h5", ".safetensors", "include_top=False", "softmax", 'pip install "minigbp[keras]"',
                   *mg.zoo.ARCHITECTURES):
        assert needle in out, needle


# ---------------------------------------------------------------------------------------
# Keras sources through the CLI (h5py only)
# ---------------------------------------------------------------------------------------

def test_keras_h5_through_the_cli(tmp_path, capsys):
    pytest.importorskip("h5py")
    from test_keras import keras_forward, keras_layers, tv_vgg, write_keras2, images
    from minigbp.io.keras import keras_vgg_preprocess
    layers = keras_layers("vgg16", hw=(2, 3))
    write_keras2(tmp_path / "k.h5", layers)
    status, out, _ = run_cli(capsys, tmp_path / "k.h5", tmp_path / "k.npz", "--flatten-hw", "2x3")
    assert status == 0
    assert "note: Keras vgg16 converted to torchvision layout" in out
    assert "this looks like vgg16: add --arch vgg16" in out
    model = tv_vgg("vgg16", (2, 3))
    model.load_state_dict(mg.load_weights(tmp_path / "k.npz"))
    x = keras_vgg_preprocess(images(hw=(2, 3)), np.float64)
    ref = keras_forward(layers, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(model(x), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    # against the real vgg16 every tiny shape is wrong: all 32 listed, nothing written
    status, _, err = run_cli(capsys, tmp_path / "k.h5", tmp_path / "k16.npz", "--arch", "vgg16",
                             "--flatten-hw", "2x3")
    assert status == 2 and "does not match vgg16: 32 problem(s)" in err
    assert not (tmp_path / "k16.npz").exists()


def test_malformed_h5_through_the_cli(tmp_path, capsys):
    pytest.importorskip("h5py")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    status, _, err = run_cli(capsys, tmp_path / "bad.h5", tmp_path / "o.npz", "--arch", "vgg16")
    assert status == 2 and "bad.h5: corrupt or truncated HDF5 file" in err
    (tmp_path / "text.h5").write_text("hello")
    status, _, err = run_cli(capsys, tmp_path / "text.h5", tmp_path / "o.npz")
    assert status == 2 and "text.h5: not an HDF5 file" in err
    assert not (tmp_path / "o.npz").exists()


def test_h5_without_h5py(tmp_path, capsys, monkeypatch):
    (tmp_path / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    monkeypatch.setitem(sys.modules, "h5py", None)
    status, _, err = run_cli(capsys, tmp_path / "w.h5", tmp_path / "o.npz")
    assert status == 2 and 'pip install "minigbp[keras]"' in err
    assert not (tmp_path / "o.npz").exists()


# ---------------------------------------------------------------------------------------
# Round trip through torch: torch.save -> convert --arch vgg11 -> mg.load
# ---------------------------------------------------------------------------------------

def torch_vgg11(torch):
    """torchvision's VGG11 structure, written out: features / avgpool / classifier."""
    nn = torch.nn
    layers, c = [], 3
    for v in mg.zoo.VGG_CONFIGS["vgg11"]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 1000))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG()


def test_torch_vgg11_round_trip(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch_vgg11(torch).eval()
    with torch.no_grad():  # non-trivial biases, so a bias mix-up would show
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.1, 0.1)
    src, dst = tmp_path / "vgg11.pth", tmp_path / "vgg11.npz"
    torch.save(net.state_dict(), src)
    status, out, err = run_cli(capsys, src, dst, "--arch", "vgg11")
    assert status == 0 and err == ""
    n_params = sum(p.numel() for p in net.parameters())
    assert out == f"wrote {dst}: 22 arrays, {n_params:,} parameters, {os.path.getsize(dst):,} bytes " \
                  f"(vgg11 architecture included)\n"
    model = mg.load(dst)
    assert list(model.state_dict()) == list(net.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 48)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = model(x)
    assert got.shape == (2, 1000) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


# ---------------------------------------------------------------------------------------
# The installed console script, once
# ---------------------------------------------------------------------------------------

def test_console_script(tmp_path):
    exe = shutil.which("minigbp")
    if exe is None:
        pytest.skip("the minigbp console script is not installed (pip install -e .)")
    mg.save(small_model(), tmp_path / "m.npz")
    proc = subprocess.run([exe, "convert", str(tmp_path / "m.npz"), str(tmp_path / "o.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'o.npz'}: 4 arrays, 437 parameters")
    proc = subprocess.run([exe, "convert", str(tmp_path / "m.npz"), str(tmp_path / "v.npz"), "--arch", "vgg13"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not match vgg13" in proc.stderr
    assert not (tmp_path / "v.npz").exists()
