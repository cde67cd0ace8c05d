"""``mg.from_keras`` against Keras and TensorFlow: Keras's own applications and random Keras CNNs
in float64, forward and all three modes, ``.keras`` files read without Keras, the command line."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minigbp as mg
from minigbp.io import ConversionError
from minigbp.io.keras_model import load_keras_model

from keras_helpers import float64_keras, import_keras, nchw, randomize_batchnorm, tf_gradient, tf_relu

keras, tf = import_keras()
L = keras.layers


# ------------------------------------------------------------------- keras.applications

APPLICATIONS = {  # name -> (constructor arguments, a layer inside, the node its name means)
    "VGG16": ({}, "block5_conv3", "block5_conv3.relu"),
    "VGG19": ({}, "block5_conv4", "block5_conv4.relu"),
    "ResNet50": ({}, "conv4_block2_out", "conv4_block2_out"),
    "DenseNet121": ({}, "conv3_block4_concat", "conv3_block4_concat"),
}


@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_applications_equal_keras_in_float64(name):
    """include_top=True (softmax head), weights=None, 10 classes at 64x64, BatchNorm statistics
    randomized: forward to 1e-10, the gradient of each sample's class probability to 1e-9."""
    kwargs, inside, node = APPLICATIONS[name]
    with float64_keras(keras):
        km = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3), classes=10, **kwargs)
    randomize_batchnorm(keras, km, seed=1)
    g = mg.from_keras(km)
    assert all(p.dtype == np.float64 for p in g.state_dict().values())
    assert g.nodes[-1].name == "predictions.softmax" and g.resolve(inside) == node
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3))
    theirs = km(x, training=False).numpy()
    assert mg.rel_error(g(nchw(x)), theirs) < 1e-10
    targets = np.array([3, 7])
    want = tf_gradient(tf, km, x, targets)
    got = mg.backprop(g, nchw(x), targets, "vanilla")
    assert np.abs(want).max() > 0 and mg.rel_error(got, want) < 1e-9
    # a Keras layer's name is its output, activation included: the recipes' layer sums
    want = tf_gradient(tf, km, x, layer=inside)
    assert mg.rel_error(mg.backprop(g, nchw(x), f"layer:{inside}", "vanilla"), want) < 1e-9


# ------------------------------------------------------------------ random Keras CNNs

def block(draw, c):
    kind = draw(st.sampled_from(["conv", "conv", "pool", "zeropad", "residual", "concat"]))
    if kind == "conv":
        stride = draw(st.integers(1, 2))
        return dict(kind=kind, filters=draw(st.integers(2, 4)), k=draw(st.integers(1, 4)), stride=stride,
                    dilation=1 if stride > 1 else draw(st.integers(1, 2)),
                    padding=draw(st.sampled_from(["valid", "same"])),
                    act=draw(st.sampled_from(["relu", "linear", "layer"])), bn=draw(st.booleans()))
    if kind == "pool":
        size, stride = draw(st.integers(2, 3)), draw(st.integers(1, 2))
        pool = draw(st.sampled_from(["max", "avg"]))
        same_ok = pool == "max" or (stride == 1 and size % 2 == 1)
        return dict(kind=kind, pool=pool, size=size, stride=stride,
                    padding=draw(st.sampled_from(["valid", "same"])) if same_ok else "valid")
    if kind == "zeropad":
        return dict(kind=kind, pads=((draw(st.integers(0, 2)), draw(st.integers(0, 2))),
                                     (draw(st.integers(0, 2)), draw(st.integers(0, 2)))))
    return dict(kind=kind)


@st.composite
def keras_cnns(draw):
    return dict(hw=(draw(st.integers(8, 13)), draw(st.integers(8, 13))), c=draw(st.integers(1, 3)),
                blocks=[block(draw, None) for _ in range(draw(st.integers(1, 3)))],
                head=draw(st.sampled_from(["gap", "gmp", "flatten"])), hidden=draw(st.booleans()),
                softmax=draw(st.booleans()))


def build(spec, relu, seed=0):
    """The Keras model of ``spec`` with ``relu`` (the string "relu" or a TensorFlow function)
    as every ReLU; the same seed gives the same weights."""
    keras.utils.set_random_seed(seed)
    act_layer = (lambda name: L.ReLU(name=name)) if relu == "relu" else (lambda name: L.Activation(relu, name=name))
    inp = keras.Input((*spec["hw"], spec["c"]))
    x, c = inp, spec["c"]
    for i, b in enumerate(spec["blocks"]):
        n = f"b{i}"
        if b["kind"] == "conv":
            act = relu if b["act"] == "relu" else None
            x = L.Conv2D(b["filters"], b["k"], strides=b["stride"], padding=b["padding"], dilation_rate=b["dilation"],
                         activation=act, name=f"{n}_conv")(x)
            c = b["filters"]
            if b["bn"]:
                x = L.BatchNormalization(epsilon=1e-3, name=f"{n}_bn")(x)
            if b["act"] == "layer":
                x = act_layer(f"{n}_relu")(x)
        elif b["kind"] == "pool":
            pool = L.MaxPooling2D if b["pool"] == "max" else L.AveragePooling2D
            x = pool(b["size"], strides=b["stride"], padding=b["padding"], name=f"{n}_pool")(x)
        elif b["kind"] == "zeropad":
            x = L.ZeroPadding2D(b["pads"], name=f"{n}_pad")(x)
        elif b["kind"] == "residual":
            y = L.Conv2D(c, 3, padding="same", activation=relu, name=f"{n}_conv_a")(x)
            y = L.Conv2D(c, 3, padding="same", name=f"{n}_conv_b")(y)
            x = act_layer(f"{n}_out")(L.Add(name=f"{n}_add")([x, y]))
        else:
            y = L.Conv2D(2, 1, activation=relu, name=f"{n}_conv_a")(x)
            z = L.Conv2D(3, 3, padding="same", activation=relu, name=f"{n}_conv_b")(x)
            x = L.Concatenate(name=f"{n}_cat")([x, y, z])
            c += 5
    x = {"gap": L.GlobalAveragePooling2D, "gmp": L.GlobalMaxPooling2D, "flatten": L.Flatten}[spec["head"]](
        name="head")(x)
    if spec["hidden"]:
        x = L.Dropout(0.5, name="drop")(L.Dense(5, activation=relu, name="fc")(x))
    x = L.Dense(3, activation="softmax" if spec["softmax"] else None, name="out")(x)
    model = keras.Model(inp, x)
    randomize_batchnorm(keras, model, seed)
    return model


@settings(max_examples=20)
@given(spec=keras_cnns(), seed=st.integers(0, 2**16), integer=st.booleans())
def test_random_keras_cnns_all_modes_vs_tensorflow(spec, seed, integer):
    """Forward, and the vanilla, guided and deconvnet maps, against TensorFlow with the rules
    written as ``tf.custom_gradient`` ReLUs (float64). Integer inputs put ties in the first
    pooling windows and global maxima (TensorFlow's max pooling routes to the first maximum,
    its reduce_max shares among ties, as minigbp's layers do); ReLU outputs of 0 put ties in
    every later one."""
    with float64_keras(keras):
        try:
            km = build(spec, "relu", seed)
        except ValueError:  # the map shrank below a kernel: not a model Keras builds
            assume(False)
        models = {m: build(spec, tf_relu(tf, m), seed) for m in ("guided", "deconvnet")}
    g = mg.from_keras(km)
    rng = np.random.default_rng(seed)
    shape = (2, *spec["hw"], spec["c"])
    x = rng.integers(-2, 3, shape).astype(np.float64) if integer else rng.standard_normal(shape)
    assert mg.rel_error(g(nchw(x)), km(x, training=False).numpy()) < 1e-10
    targets = np.array([0, 2])
    want = {"vanilla": tf_gradient(tf, km, x, targets)}
    want.update({m: tf_gradient(tf, models[m], x, targets) for m in models})
    assume(np.abs(want["vanilla"]).max() > 0)
    for mode, w in want.items():
        got = mg.backprop(g, nchw(x), targets, mode)
        assert mg.rel_error(got, w) < 1e-9, mode


def test_same_padding_is_tensorflows_at_every_size(tmp_path):
    """A stride-2 "same" convolution pads by an amount that depends on the input size: one
    converted model matches Keras at odd and even sizes."""
    with float64_keras(keras):
        inp = keras.Input((None, None, 2))
        out = L.Conv2D(3, 4, strides=2, padding="same", name="c")(inp)
        out = L.MaxPooling2D(3, strides=2, padding="same", name="p")(out)
        km = keras.Model(inp, out)
    g = mg.from_keras(km, example_input=np.zeros((1, 9, 9, 2)))
    assert [type(layer).__name__ for _, layer in g.named_leaves()] == ["SamePad2d", "Conv2d", "SamePad2d",
                                                                        "MaxPool2d"]
    mg.save(g, tmp_path / "same.npz")  # the -inf padding value survives the model file
    again = mg.load(tmp_path / "same.npz")
    for hw in ((9, 9), (10, 11), (16, 7)):
        x = np.random.default_rng(1).standard_normal((1, *hw, 2))
        assert mg.rel_error(g(nchw(x)), nchw(km(x).numpy())) < 1e-12
        np.testing.assert_array_equal(again(nchw(x)), g(nchw(x)))


# ------------------------------------------------------------------ files and errors

def small_model(head_softmax=True):
    inp = keras.Input((None, None, 3))
    x = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(3, activation="softmax" if head_softmax else None, name="predictions")(x)
    model = keras.Model(inp, x, name="small")
    randomize_batchnorm(keras, model)
    return model


def test_dot_keras_file_is_read_without_keras(tmp_path):
    km = small_model()
    km.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 20)).astype(np.float32)
    g = load_keras_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(g(x), mg.from_keras(km)(x))
    code = (f"import sys; from minigbp.io.keras_model import load_keras_model; "
            f"load_keras_model({str(tmp_path / 'm.keras')!r}); "
            f"assert not {{'keras', 'tensorflow'}} & set(sys.modules), 'Keras was imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_convert_and_explain_take_keras_models(tmp_path):
    from PIL import Image

    km = small_model()
    km.save(tmp_path / "m.keras")
    res = subprocess.run(["minigbp", "convert", "m.keras", "m.npz"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    x = np.random.default_rng(0).standard_normal((1, 3, 24, 24)).astype(np.float32)
    np.testing.assert_allclose(mg.load(tmp_path / "m.npz")(x), nchw_out(km, x), rtol=1e-5)
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(tmp_path / "img.png")
    res = subprocess.run(["minigbp", "explain", "img.png", "--model", "m.keras", "--preprocess", "imagenet",
                          "--mode", "guided", "--out", "out"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "img_guided.png").exists()


def nchw_out(km, x):
    return km(x.transpose(0, 2, 3, 1)).numpy()


def test_unsupported_layer_is_named_and_nothing_is_written(tmp_path):
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(2, 3, name="conv")(inp)
    x = L.LayerNormalization(name="norm")(x)
    km = keras.Model(inp, L.GlobalAveragePooling2D(name="gap")(x))
    with pytest.raises(ConversionError, match=r"layer 'norm' \(LayerNormalization\) is not supported"):
        mg.from_keras(km)
    km.save(tmp_path / "bad.keras")
    res = subprocess.run(["minigbp", "convert", "bad.keras", "bad.npz"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode == 2 and "'norm' (LayerNormalization)" in res.stderr
    assert not (tmp_path / "bad.npz").exists()


@pytest.mark.parametrize("make, words", [
    (lambda: L.Conv2D(2, 3, activation="tanh", name="c"), "activation 'tanh'"),
    (lambda: L.ReLU(max_value=6.0, name="c"), "not a plain ReLU"),
    (lambda: L.AveragePooling2D(2, padding="same", name="c"), "pads asymmetrically"),
])
def test_layers_minigbp_cannot_represent_are_refused(make, words):
    inp = keras.Input((8, 8, 2))
    km = keras.Model(inp, L.GlobalAveragePooling2D(name="gap")(make()(inp)))
    with pytest.raises(ConversionError, match="'c'") as e:
        mg.from_keras(km)
    assert words in str(e.value)


def test_subclassed_models_and_non_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 1)))
    with pytest.raises(ConversionError, match="subclassed"):
        mg.from_keras(net)
    with pytest.raises(ConversionError, match="expected a keras.Model"):
        mg.from_keras(object())


def test_nested_model_layers_are_prefixed():
    base = keras.Sequential([keras.Input((10, 10, 1)), L.Conv2D(3, 3, activation="relu", name="c1"),
                             L.MaxPooling2D(name="p1")], name="base")
    inp = keras.Input((10, 10, 1))
    out = L.Dense(2, name="head")(L.Flatten(name="flat")(base(inp)))
    km = keras.Model(inp, out)
    g = mg.from_keras(km)
    assert [n.name for n in g.nodes] == ["base.c1.conv", "base.c1.relu", "base.p1", "flat", "head"]
    assert g.resolve("base") == "base.p1"


def test_tf_keras_sequential_converts():
    """TensorFlow's own ``tf.keras`` (Keras 3 in TensorFlow 2.16+), a top-level Sequential with a
    Flatten of a 3x3 map into its Dense: the rows are reordered to minigbp's (c, h, w)."""
    tk = tf.keras
    model = tk.Sequential([tk.Input((8, 8, 2)), tk.layers.Conv2D(4, 3, activation="relu", name="c"),
                           tk.layers.MaxPooling2D(2, name="p"), tk.layers.Flatten(name="f"),
                           tk.layers.Dropout(0.3, name="drop"), tk.layers.Dense(5, name="out")])
    g = mg.from_keras(model)
    assert [n.name for n in g.nodes] == ["c.conv", "c.relu", "p", "f", "drop", "out"]
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(g(nchw(x)), model(x).numpy(), rtol=1e-5, atol=1e-6)
    want = tf_gradient(tf, model, x, np.array([0, 4, 2]))
    assert mg.rel_error(mg.backprop(g, nchw(x), np.array([0, 4, 2]), "vanilla"), want) < 1e-5
