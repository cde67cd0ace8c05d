"""Keras VGG weights -> torchvision layout (``minigbp.keras``), and Keras's VGG preprocessing.

Two oracles:

* a channels-last NumPy forward pass written here (``keras_forward``: HWIO kernels, 'same'
  padding, NHWC flatten, ``x @ kernel``), fed the very arrays written into hand-made HDF5
  files of Keras's exact layouts; the converted minigbp model (NCHW, OIHW, (out, in)) must
  give the same logits, in float64 to ~1e-12. These tests need only h5py.
* real Keras, when installed: a small VGG-shaped Keras model with Keras's layer names is
  saved by Keras itself (``.weights.h5``, legacy ``.h5``, ``.keras``; and Keras 2's
  ``save_weights("x.h5")`` when ``tf_keras`` is installed), converted, and compared with
  Keras's own output in float32 (1e-5). Keras runs on TensorFlow if it is installed, else
  on PyTorch (``KERAS_BACKEND=torch``), so CI needs no TensorFlow.
"""

import importlib.util
import io
import os
import sys
import zipfile

import numpy as np
import pytest

import minigbp as mg
from minigbp.io.keras import (IMAGENET_BGR_MEAN, KerasLayer, keras_vgg_deprocess, keras_vgg_preprocess,
                           keras_vgg_to_torch, load_keras_vgg, read_keras_weights)

h5py = pytest.importorskip("h5py")

# torchvision's features indices of the convolutions, written out (not derived) as the truth
TV_CONV_INDICES = {
    "vgg11": [0, 3, 6, 8, 11, 13, 16, 18],
    "vgg13": [0, 2, 5, 7, 10, 12, 15, 17, 20, 22],
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
}
BLOCKS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3),
          "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (4, 6, 8, 8, 8)
DENSE = (16, 12, 5)  # fc1, fc2, predictions outputs


# ---------------------------------------------------------------------------------------
# Weights in Keras's layout, a channels-last reference forward, a torchvision-layout model
# ---------------------------------------------------------------------------------------

def keras_layers(arch="vgg11", hw=(2, 3), widths=WIDTHS, dense=DENSE, top=True, dtype=np.float64, seed=0):
    """``[(layer_name, [kernel, bias]), ...]`` in Keras's order and layouts, weightless layers
    (input, pools, flatten) included with ``[]``."""
    rng = np.random.default_rng(seed)
    out, c = [("input_1", [])], 3
    for b, (n, w) in enumerate(zip(BLOCKS[arch], widths), 1):
        for j in range(1, n + 1):
            k = rng.standard_normal((3, 3, c, w)) / np.sqrt(9 * c)
            out.append((f"block{b}_conv{j}", [k.astype(dtype), (0.1 * rng.standard_normal(w)).astype(dtype)]))
            c = w
        out.append((f"block{b}_pool", []))
    if top:
        out.append(("flatten", []))
        n_in = hw[0] * hw[1] * c
        for name, n_out in zip(("fc1", "fc2", "predictions"), dense):
            k = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
            out.append((name, [k.astype(dtype), (0.1 * rng.standard_normal(n_out)).astype(dtype)]))
            n_in = n_out
    return out


def keras_forward(layers, x):
    """What Keras computes, channels-last, written independently of minigbp.

    ``Conv2D(padding="same")`` is ``sum_ij xpad[:, i:i+H, j:j+W, :] @ K[i, j]`` (HWIO kernel,
    cross-correlation); ``MaxPooling2D(2)`` takes 2x2 maxima; ``Flatten`` flattens (H, W, C) in
    C order; ``Dense`` is ``x @ kernel + bias``; ReLU everywhere but on ``predictions``
    (returns the logits, before Keras's softmax).
    """
    for name, w in layers:
        if name.startswith("block") and "_conv" in name:
            k, b = w
            n, h, wd, _ = x.shape
            xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            x = sum(xp[:, i:i + h, j:j + wd, :] @ k[i, j] for i in range(3) for j in range(3)) + b
            x = np.maximum(x, 0)
        elif name.endswith("_pool"):
            n, h, wd, c = x.shape
            x = x[:, :h // 2 * 2, :wd // 2 * 2].reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
        elif name == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif name in ("fc1", "fc2", "predictions"):
            x = x @ w[0] + w[1]
            if name != "predictions":
                x = np.maximum(x, 0)
    return x


def tv_vgg(arch="vgg11", hw=(2, 3), widths=WIDTHS, dense=DENSE, top=True):
    """torchvision's VGG module structure (``features.N``, ``avgpool``, ``classifier.N``) with
    small widths; ``AdaptiveAvgPool2d(hw)`` is the identity on an ``hw`` map, as (7, 7) is on
    VGG's 224x224 inputs."""
    layers, c = [], 3
    for n, w in zip(BLOCKS[arch], widths):
        for _ in range(n):
            layers += [mg.Conv2d(c, w, 3, padding=1), mg.ReLU()]
            c = w
        layers.append(mg.MaxPool2d(2, 2))
    parts = {"features": mg.Sequential(*layers)}
    if top:
        parts.update(avgpool=mg.AdaptiveAvgPool2d(hw), flatten=mg.Flatten(), classifier=mg.Sequential(
            mg.Linear(c * hw[0] * hw[1], dense[0]), mg.ReLU(), mg.Dropout(),
            mg.Linear(dense[0], dense[1]), mg.ReLU(), mg.Dropout(), mg.Linear(dense[1], dense[2])))
    return mg.Sequential(**parts)


def images(n=2, hw=(2, 3), seed=1):
    """Random RGB uint8 images whose last VGG feature map is ``hw`` (5 poolings: 32x)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 32 * hw[0], 32 * hw[1], 3)).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Hand-written HDF5 files in Keras's layouts
# ---------------------------------------------------------------------------------------

def _names_attr(names, as_str):
    if not names:
        return np.asarray([])  # what Keras writes for a layer without weights (float64, empty)
    return list(names) if as_str else np.asarray([n.encode("utf8") for n in names])


def write_keras2(path, layers, style="tf2", whole_model=False, chunks=1, as_str=False):
    """Keras 2 / tf.keras HDF5 layout (``save_weights("x.h5")``; ``model.save`` if whole_model).

    style "tf2": weight names "block1_conv1/kernel:0" (datasets in a same-named subgroup);
    "applications": "block1_conv1_W_1:0" directly in the layer group (the files
    keras.applications downloads); "keras3": "block1_conv1/kernel" (Keras 3's legacy .h5).
    ``chunks`` > 1 splits layer_names into layer_names0, layer_names1, ... as Keras does for
    attributes beyond the 64 KB HDF5 header limit.
    """
    wn = {"tf2": ("{}/kernel:0", "{}/bias:0"), "applications": ("{}_W_1:0", "{}_b_1:0"),
          "keras3": ("{}/kernel", "{}/bias")}[style]
    with h5py.File(path, "w") as f:
        if whole_model:
            f.attrs["model_config"] = '{"class_name": "Functional", "config": {}}'
            f.attrs["keras_version"] = "2.15.0"
            root = f.create_group("model_weights")
        else:
            root = f
        root.attrs["backend"] = "tensorflow"
        root.attrs["keras_version"] = "2.15.0"
        names = [n for n, _ in layers]
        if chunks == 1:
            root.attrs["layer_names"] = _names_attr(names, as_str)
        else:
            for i, part in enumerate(np.array_split(np.array(names, dtype=object), chunks)):
                root.attrs[f"layer_names{i}"] = _names_attr(list(part), as_str)
        for name, weights in layers:
            g = root.create_group(name)
            wnames = [p.format(name) for p in wn][:len(weights)]
            g.attrs["weight_names"] = _names_attr(wnames, as_str)
            for w, arr in zip(wnames, weights):
                g.create_dataset(w, data=arr)  # "a/b:0" creates subgroup "a" implicitly


def _class_key(name):
    if "_conv" in name:
        return "conv2d"
    if name in ("fc1", "fc2", "predictions"):
        return "dense"
    return {"input_1": "input_layer", "flatten": "flatten"}.get(name, "max_pooling2d")


def write_keras3(target, layers, names=True, top="layers"):
    """Keras 3 ``.weights.h5`` layout: ``/layers/<class key>/vars/<i>``.

    Keys are the snake-cased class plus a counter in model order (conv2d, conv2d_1, ...,
    conv2d_12); ``vars`` carries the layer's name as an attribute in recent Keras 3 only
    (``names=False`` models tf.keras 2.13+ and early Keras 3). tf.keras 2.13-2.15 used
    ``_layer_checkpoint_dependencies`` as the top group.
    """
    used = {}
    with h5py.File(target, "w") as f:
        group = f.create_group(top)
        for name, weights in layers:
            base = _class_key(name)
            key = base if base not in used else f"{base}_{used[base]}"
            used[base] = used.get(base, 0) + 1
            v = group.create_group(key).create_group("vars")
            if names:
                v.attrs["name"] = name
            for i, arr in enumerate(weights):
                v.create_dataset(str(i), data=arr)
        f.create_group("vars")


def write_dot_keras(path, layers):
    """A Keras 3 ``.keras`` archive: a zip holding config.json, metadata.json, model.weights.h5."""
    blob = io.BytesIO()
    write_keras3(blob, layers)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", '{"keras_version": "3.15.1"}')
        zf.writestr("config.json", '{"class_name": "Functional"}')
        zf.writestr("model.weights.h5", blob.getvalue())


def converted_logits(path, arch="vgg11", hw=(2, 3), flatten_hw=None, x=None):
    r = load_keras_vgg(path, flatten_hw=flatten_hw)
    model = tv_vgg(arch, hw)
    model.load_state_dict(r.state_dict)
    return r, model(x)


# ---------------------------------------------------------------------------------------
# Conversion, against the channels-last oracle (h5py only)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("style,whole_model,chunks,as_str", [
    ("tf2", False, 1, False),          # tf.keras 2: model.save_weights("x.h5")
    ("tf2", True, 1, True),            # tf.keras 2: model.save("x.h5") -> model_weights/
    ("applications", False, 1, False),  # the keras.applications download files
    ("keras3", True, 3, True),         # Keras 3 legacy model.save("x.h5"); chunked layer_names
])
def test_keras2_layouts_give_keras_logits(tmp_path, style, whole_model, chunks, as_str):
    layers = keras_layers("vgg11", hw=(2, 3))
    path = tmp_path / "w.h5"
    write_keras2(path, layers, style=style, whole_model=whole_model, chunks=chunks, as_str=as_str)
    img = images(hw=(2, 3))
    ref = keras_forward(layers, keras_vgg_preprocess(img, np.float64).transpose(0, 2, 3, 1))
    r, out = converted_logits(path, "vgg11", (2, 3), flatten_hw=(2, 3),
                              x=keras_vgg_preprocess(img, np.float64))
    assert r.arch == "vgg11" and r.missing_keys == [] and r.ignored_layers == []
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_fc1_reorder_is_what_makes_it_right(tmp_path):
    """Negative control: transposing fc1 without the channels-last -> channels-first
    reorder loads fine, has the right shapes, and gives different logits."""
    layers = keras_layers("vgg11", hw=(2, 2))
    path = tmp_path / "w.h5"
    write_keras2(path, layers)
    x = keras_vgg_preprocess(images(hw=(2, 2)), np.float64)
    ref = keras_forward(layers, x.transpose(0, 2, 3, 1))
    r, out = converted_logits(path, "vgg11", (2, 2), x=x)  # square map: flatten_hw inferred
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    naive = dict(r.state_dict)
    naive["classifier.0.weight"] = np.ascontiguousarray(dict(layers)["fc1"][0].T)
    model = tv_vgg("vgg11", (2, 2))
    model.load_state_dict(naive)
    assert np.abs(model(x) - ref).max() > 1e-3 * np.abs(ref).max()


@pytest.mark.parametrize("arch", ["vgg11", "vgg13", "vgg16", "vgg19"])
def test_names_map_to_torchvision_indices(arch):
    layers = keras_layers(arch, hw=(1, 1))
    r = keras_vgg_to_torch([KerasLayer(n, n, w) for n, w in layers if w])
    assert r.arch == arch
    convs = [n for n, w in layers if "_conv" in n]
    expected = []
    for i in TV_CONV_INDICES[arch]:
        expected += [f"features.{i}.weight", f"features.{i}.bias"]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(r.state_dict) == expected
    k, b = dict(layers)[convs[-1]]
    last = TV_CONV_INDICES[arch][-1]
    assert np.array_equal(r.state_dict[f"features.{last}.weight"], k.transpose(3, 2, 0, 1))  # HWIO -> OIHW
    assert np.array_equal(r.state_dict[f"features.{last}.bias"], b)
    assert np.array_equal(r.state_dict["classifier.3.weight"], dict(layers)["fc2"][0].T)
    assert all(a.flags.c_contiguous for a in r.state_dict.values())


def test_vgg16_names_match_zoo_keys():
    """The converted keys are exactly mg.zoo.vgg16's (no model is built: shapes come from
    the zoo's config, keys from a tiny file with VGG16's names)."""
    r = keras_vgg_to_torch([KerasLayer(n, n, w) for n, w in keras_layers("vgg16", hw=(1, 1)) if w])
    zoo_keys = [f"features.{i}.{p}" for i, v in enumerate(_zoo_features("vgg16")) if v == "conv"
                for p in ("weight", "bias")] + [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(r.state_dict) == zoo_keys


def _zoo_features(arch):
    out = []
    for v in mg.zoo.VGG_CONFIGS[arch]:
        out += ["pool"] if v == "M" else ["conv", "relu"]
    return out


def test_include_top_false_converts_features_and_reports_the_rest(tmp_path):
    layers = keras_layers("vgg16", top=False)
    path = tmp_path / "notop.h5"
    write_keras2(path, layers, style="applications")
    r = load_keras_vgg(path)
    assert r.arch == "vgg16"
    assert r.missing_keys == [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert any("include_top=False" in n for n in r.notes)
    model = tv_vgg("vgg16", top=False)
    model.load_state_dict(r.state_dict)  # strict: the file's keys are exactly the features'
    x = keras_vgg_preprocess(images(hw=(2, 3)), np.float64)
    ref = keras_forward(layers, x.transpose(0, 2, 3, 1))  # (N, 2, 3, C) after block5_pool
    np.testing.assert_allclose(model(x), ref.transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("names,top", [(True, "layers"), (False, "layers"),
                                       (False, "_layer_checkpoint_dependencies")])
def test_keras3_weights_h5(tmp_path, names, top):
    """VGG16 has 13 convolutions: class keys conv2d .. conv2d_12 must be taken in numeric
    order (conv2d_10 after conv2d_9), which matters when names are not stored."""
    layers = keras_layers("vgg16", hw=(2, 3))
    path = tmp_path / "w.weights.h5"
    write_keras3(path, layers, names=names, top=top)
    x = keras_vgg_preprocess(images(hw=(2, 3)), np.float64)
    ref = keras_forward(layers, x.transpose(0, 2, 3, 1))
    r, out = converted_logits(path, "vgg16", (2, 3), flatten_hw=(2, 3), x=x)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert any("no layer names" in n for n in r.notes) == (not names)


def test_dot_keras_archive(tmp_path):
    layers = keras_layers("vgg13", hw=(2, 2), dtype=np.float32)
    path = tmp_path / "m.keras"
    write_dot_keras(path, layers)
    x = keras_vgg_preprocess(images(hw=(2, 2)))
    ref = keras_forward([(n, [a.astype(np.float64) for a in w]) for n, w in layers],
                        x.transpose(0, 2, 3, 1).astype(np.float64))
    r, out = converted_logits(path, "vgg13", (2, 2), x=x)
    assert out.dtype == np.float32 and r.state_dict["features.0.weight"].dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_nested_model_and_custom_head(tmp_path):
    """A VGG16 base nested in a model with its own head (Keras 2 layout): the base's weight
    names carry the inner layer names; the head is reported as ignored."""
    layers = keras_layers("vgg16", top=False)
    base = [(n, w) for n, w in layers if w]
    rng = np.random.default_rng(3)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.attrs["layer_names"] = np.asarray([b"vgg16", b"flatten", b"dense"])
        g = f.create_group("vgg16")
        wnames = [f"{n}/{p}:0" for n, _ in base for p in ("kernel", "bias")]
        g.attrs["weight_names"] = np.asarray([w.encode() for w in wnames])
        for w, arr in zip(wnames, [a for _, ws in base for a in ws]):
            g.create_dataset(w, data=arr)
        f.create_group("flatten").attrs["weight_names"] = np.asarray([])
        d = f.create_group("dense")
        d.attrs["weight_names"] = np.asarray([b"dense/kernel:0", b"dense/bias:0"])
        d.create_dataset("dense/kernel:0", data=rng.standard_normal((48, 2)))
        d.create_dataset("dense/bias:0", data=np.zeros(2))
    r = load_keras_vgg(tmp_path / "t.h5")
    assert r.arch == "vgg16" and r.ignored_layers == ["dense"] and len(r.missing_keys) == 6
    assert np.array_equal(r.state_dict["features.28.bias"], dict(base)["block5_conv3"][1])


def test_reader_returns_keras_layouts_in_model_order(tmp_path):
    layers = keras_layers("vgg11")
    write_keras2(tmp_path / "w.h5", layers)
    got = read_keras_weights(tmp_path / "w.h5")
    assert [l.name for l in got] == [n for n, w in layers if w]
    for l, (_, w) in zip(got, [(n, w) for n, w in layers if w]):
        assert all(np.array_equal(a, b) for a, b in zip(l.weights, w))


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------

def test_not_hdf5_truncated_and_missing(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not HDF5 at all")
    with pytest.raises(ValueError, match=r"bad\.h5: not an HDF5 file"):
        load_keras_vgg(bad)
    good = tmp_path / "good.h5"
    write_keras2(good, keras_layers("vgg11"))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"cut\.h5: corrupt or truncated HDF5"):
        load_keras_vgg(cut)
    with pytest.raises(FileNotFoundError):
        load_keras_vgg(tmp_path / "absent.h5")
    z = tmp_path / "other.keras"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="not a .keras model"):
        load_keras_vgg(z)


def test_hdf5_that_is_not_keras(tmp_path):
    p = tmp_path / "data.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"data\.h5: not a Keras weights file.*images"):
        load_keras_vgg(p)


def test_dangling_names(tmp_path):
    p = tmp_path / "w.h5"
    write_keras2(p, keras_layers("vgg11"))
    with h5py.File(p, "a") as f:
        del f["block2_conv1"]
    with pytest.raises(ValueError, match="layer_names lists 'block2_conv1'"):
        load_keras_vgg(p)
    write_keras2(p, keras_layers("vgg11"))
    with h5py.File(p, "a") as f:
        del f["fc2/fc2/bias:0"]
    with pytest.raises(ValueError, match=r"lists weight 'fc2/bias:0'"):
        load_keras_vgg(p)


def _edit(layers, name, weights=None, drop=False):
    """``layers`` with layer ``name`` dropped, or its weights replaced."""
    if drop:
        return [(n, w) for n, w in layers if n != name]
    return [(n, weights if n == name else w) for n, w in layers]


@pytest.mark.parametrize("change,match", [
    (lambda L: _edit(L, "block4_conv1", drop=True), r"block 4 has convolutions \['block4_conv2'\]"),
    (lambda L: _edit(L, "block2_conv1", [dict(L)["block2_conv1"][0]]),
     "has 1 weight arrays; expected a kernel and a bias"),
    (lambda L: _edit(L, "block1_conv1", [dict(L)["block1_conv1"][0].transpose(3, 2, 0, 1).copy(),
                                         dict(L)["block1_conv1"][1]]), "Theano kernel ordering"),
    (lambda L: _edit(L, "block3_conv1", [np.zeros((3, 3, 5, 8)), np.zeros(8)]), "block3_conv1 takes 5 input channels"),
    (lambda L: _edit(L, "fc2", [np.zeros((7, 12)), np.zeros(12)]),
     "fc2 takes 7 inputs but the previous Dense gives 16"),
    (lambda L: [(n, w) for n, w in L if "block5" not in n], r"convolutions per block \(1, 1, 2, 2\) match no VGG"),
])
def test_malformed_structures(tmp_path, change, match):
    p = tmp_path / "w.h5"
    write_keras2(p, change(keras_layers("vgg11")))
    with pytest.raises(ValueError, match=match):
        load_keras_vgg(p, flatten_hw=(2, 3))


def test_flatten_size_errors(tmp_path):
    p = tmp_path / "w.h5"
    write_keras2(p, keras_layers("vgg11", hw=(2, 3)))
    with pytest.raises(ValueError, match=r"not a square map; pass flatten_hw=\(H, W\)"):
        load_keras_vgg(p)
    with pytest.raises(ValueError, match=r"flatten_hw=\(3, 3\) with 8 channels gives 72"):
        load_keras_vgg(p, flatten_hw=(3, 3))


def test_no_vgg_layers(tmp_path):
    p = tmp_path / "w.h5"
    write_keras2(p, [("dense", [np.zeros((3, 2)), np.zeros(2)])])
    with pytest.raises(ValueError, match="no VGG convolutions.*'dense'"):
        load_keras_vgg(p)


def test_without_h5py_the_error_says_what_to_install(tmp_path, monkeypatch):
    p = tmp_path / "w.h5"
    write_keras2(p, keras_layers("vgg11"))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "minigbp\[keras\]"'):
        load_keras_vgg(p)


# ---------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------

def test_preprocess_is_caffe_mode_then_nchw():
    img = images(n=3, hw=(1, 1))
    x = keras_vgg_preprocess(img)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    mean = np.float32(IMAGENET_BGR_MEAN)
    for c_out, c_in in enumerate((2, 1, 0)):  # B, G, R from R, G, B
        assert np.array_equal(x[:, c_out], img[..., c_in].astype(np.float32) - mean[c_out])
    single = keras_vgg_preprocess(img[0])
    assert single.shape == (3, 32, 32) and np.array_equal(single, x[0])
    assert np.array_equal(keras_vgg_preprocess(img.astype(np.float32)), x)
    x64 = keras_vgg_preprocess(img, np.float64)
    assert x64.dtype == np.float64 and np.abs(x64 - x).max() < 1e-4


def test_deprocess_inverts_preprocess():
    img = images(n=2, hw=(1, 1))
    x = keras_vgg_preprocess(img)
    back = keras_vgg_deprocess(x)
    assert back.shape == img.shape and back.dtype == np.float32
    assert np.abs(back - img).max() < 1e-4
    assert np.array_equal(keras_vgg_deprocess(x, to_uint8=True), img)
    g = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)  # a signal
    assert np.array_equal(keras_vgg_deprocess(g, add_mean=False), g[:, ::-1].transpose(0, 2, 3, 1))
    before = x.copy()
    keras_vgg_deprocess(x)
    assert np.array_equal(x, before)


@pytest.mark.parametrize("bad,exc", [(np.zeros((2, 8, 8, 4)), ValueError), (np.zeros((8, 8)), ValueError),
                                     (np.zeros((1, 8, 8, 3), dtype=bool), TypeError)])
def test_preprocess_rejects(bad, exc):
    with pytest.raises(exc):
        keras_vgg_preprocess(bad)
    with pytest.raises(ValueError):
        keras_vgg_deprocess(np.zeros((1, 4, 8, 8)))


# ---------------------------------------------------------------------------------------
# Real Keras (skipped when Keras is not installed)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
        if importlib.util.find_spec("torch") is None:
            pytest.skip("Keras needs TensorFlow or PyTorch as its backend")
        os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3."):
        pytest.skip(f"these tests use Keras 3 APIs; found Keras {keras.__version__}")
    return keras


def build_keras_vgg(keras, layers, hw, final_activation):
    """A Keras VGG with Keras's layer names, holding the arrays of ``layers``."""
    L = keras.layers
    inp = keras.Input((32 * hw[0], 32 * hw[1], 3))
    x = inp
    for name, w in layers:
        if "_conv" in name:
            x = L.Conv2D(w[0].shape[3], 3, padding="same", activation="relu", name=name)(x)
        elif name.endswith("_pool"):
            x = L.MaxPooling2D(2, strides=2, name=name)(x)
        elif name == "flatten":
            x = L.Flatten(name=name)(x)
        elif name in ("fc1", "fc2", "predictions"):
            act = "relu" if name != "predictions" else final_activation
            x = L.Dense(w[0].shape[1], activation=act, name=name)(x)
    model = keras.Model(inp, x, name="vgg16")
    for name, w in layers:
        if w:
            model.get_layer(name).set_weights(w)
    return model


def test_real_keras_vgg16_files_give_keras_logits(keras, tmp_path):
    hw = (2, 3)
    layers = keras_layers("vgg16", hw=hw, dtype=np.float32, seed=5)
    soft = build_keras_vgg(keras, layers, hw, "softmax")      # as keras.applications builds it
    logit = build_keras_vgg(keras, layers, hw, None)          # same weights, no softmax
    paths = {"weights.h5": tmp_path / "a.weights.h5", "legacy.h5": tmp_path / "b.h5",
             "keras": tmp_path / "c.keras"}
    soft.save_weights(paths["weights.h5"])
    soft.save(paths["legacy.h5"])  # Keras 3's legacy HDF5: the Keras 2 layout under model_weights/
    soft.save(paths["keras"])
    img = images(hw=hw)
    kx = keras.applications.vgg16.preprocess_input(img.astype(np.float32))
    x = keras_vgg_preprocess(img)
    assert np.array_equal(x, kx.transpose(0, 3, 1, 2))  # exactly Keras's preprocessing
    ref = logit.predict(kx, verbose=0)
    prob = soft.predict(kx, verbose=0)
    # the NumPy channels-last oracle agrees with Keras too
    np.testing.assert_allclose(keras_forward(layers, kx.astype(np.float64)), ref, rtol=1e-5,
                               atol=1e-5 * np.abs(ref).max())
    for what, path in paths.items():
        r, out = converted_logits(path, "vgg16", hw, flatten_hw=hw, x=x)
        assert r.arch == "vgg16" and r.missing_keys == [], what
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(), err_msg=what)
        e = np.exp(out - out.max(axis=1, keepdims=True))
        np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), prob, atol=1e-6, err_msg=what)


def test_real_keras_applications_vgg19_notop(keras, tmp_path):
    """keras.applications.VGG19 itself (random weights, include_top=False): the converted
    features equal Keras's block5_pool output."""
    keras.utils.set_random_seed(0)
    base = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 64, 3))
    base.save_weights(tmp_path / "vgg19_notop.weights.h5")
    r = load_keras_vgg(tmp_path / "vgg19_notop.weights.h5")
    assert r.arch == "vgg19" and len(r.missing_keys) == 6
    model = tv_vgg("vgg19", widths=(64, 128, 256, 512, 512), top=False)
    model.load_state_dict(r.state_dict)
    img = images(n=1, hw=(1, 2))
    ref = base.predict(keras.applications.vgg19.preprocess_input(img.astype(np.float32)), verbose=0)
    out = model(keras_vgg_preprocess(img))
    np.testing.assert_allclose(out, ref.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5 * np.abs(ref).max())
