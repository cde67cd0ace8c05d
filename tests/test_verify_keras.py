"""``minigbp.verify`` for TensorFlow: Keras models and TensorFlow recipes (written out in
examples/verify_recipes.py, as published) get the right verdicts, from Python and from the
command line, and the per-layer probe names what each Keras layer's ReLU did."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from example_scripts import load_example
from keras_helpers import float64_keras, import_keras

keras, tf = import_keras()
pytest.importorskip("torch")  # the example script defines the torch recipes too

from minigbp.verify import RTOL, check  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "verify_recipes.py"


R = load_example("verify_recipes.py", "verify_recipes_keras_under_test")


@pytest.fixture(scope="module")
def reports():
    return {fn.__name__: check(factory(), fn, mode=claim, target=target)
            for _, factory, fn, claim, _, target in R.TF_RECIPES}


@pytest.mark.parametrize("fn, verdict, dtype", [
    ("keras_guided_relu_class", "guided", "float32"),   # its casts to "float32" fail in float64
    ("keras_guided_relu_layer", "guided", "float32"),
    ("keras_forward_mask_relu", "vanilla", "float64"),
    ("tf_keras_vis_saliency", "vanilla", "float64"),
])
def test_tensorflow_recipe_verdicts(reports, fn, verdict, dtype):
    report = reports[fn]
    assert report.error is None, str(report)
    assert report.verdict == verdict and report.matches == (verdict,), str(report)
    assert report.dtype == dtype
    for m, e in report.errors.items():
        assert (e.max_rel <= RTOL[dtype]) == (m == verdict)
    # the hard inputs were used, in Keras's layout
    assert [(i.name, i.shape) for i in report.inputs] == [(n, (4, 32, 32, 3)) for n in
                                                          ("integer x", "normal x", "integer weights")]


def test_a_layer_recipe_is_judged_from_its_layer(reports):
    report = reports["keras_guided_relu_layer"]
    assert report.target == "layer block5_conv4" and "explains: layer block5_conv4" in str(report)
    # judged as a class explanation instead, the same function matches nothing
    other = check(R.make_keras_vgg19(), R.keras_guided_relu_layer, mode="guided", integer_weights=False,
                  probe=False)
    assert other.verdict == "none"


def guided_on_block5_only(model, x, target):
    @tf.custom_gradient
    def guidedRelu(x):
        def grad(dy):
            return tf.cast(dy > 0, x.dtype) * tf.cast(x > 0, x.dtype) * dy
        return tf.nn.relu(x), grad

    for layer in model.layers:
        if layer.name.startswith("block5") and getattr(layer, "activation", None) == tf.keras.activations.relu:
            layer.activation = guidedRelu
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.gather(model(x), target, batch_dims=1)
    return tape.gradient(score, x)


def test_probe_names_what_each_keras_relu_did():
    report = check(R.make_keras_vgg19(), guided_on_block5_only, mode="guided")
    assert report.verdict == "none" and report.dtype == "float64"
    p = report.probe
    assert p.possible, p.reason
    assert p.divergence["guided"].layer == "fc2.relu"
    assert p.relus["guided"] == [f"block5_conv{i}.relu" for i in range(1, 5)]
    assert "fc1.relu" in p.skipped and "block1_conv1.relu" in p.skipped and len(p.skipped) == 14
    rules = {row.layer: row.rule for row in p.layers}
    assert rules["block5_conv4.conv"] == "as in minigbp" and rules["block4_pool"] == "as in minigbp"


def test_functions_must_use_the_model_they_are_given():
    model = R.make_keras_vgg19()

    def closes_over(m, x, target):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.gather(model(x), target, batch_dims=1)
        return tape.gradient(score, x)

    with pytest.raises(ValueError, match="did not run the model it was given"):
        check(model, closes_over)


def test_float64_keras_model_and_inputs_in_keras_layout():
    with float64_keras(keras):
        model = R.make_keras_vgg19()
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3))
    report = check(model, R.tf_keras_vis_saliency, inputs=x, targets=[1, 2], mode="vanilla", integer_weights=False)
    assert report.ok and report.dtype == "float64" and not any("copy" in n for n in report.notes)
    assert report.inputs[-1].name == "your inputs" and report.inputs[-1].shape == (2, 32, 32, 3)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minigbp", "verify", f"{EXAMPLE}:make_keras_vgg19",
                           *args], capture_output=True, text=True, timeout=600)


def test_cli_with_a_keras_factory():
    res = run_cli(f"{EXAMPLE}:keras_guided_relu_layer", "--target", "layer:block5_conv4", "--no-probe")
    assert res.returncode == 0, res.stderr
    assert "verdict: guided" in res.stdout and "on vgg19" in res.stdout
    res = run_cli(f"{EXAMPLE}:keras_forward_mask_relu", "--mode", "guided", "--json", "--no-probe")
    assert res.returncode == 1
    assert json.loads(res.stdout)["verdict"] == "vanilla"


def test_cli_bad_target_is_one_line():
    res = run_cli(f"{EXAMPLE}:keras_guided_relu_layer", "--target", "layer:block9_conv1")
    assert res.returncode == 2 and "no layer named 'block9_conv1'" in res.stderr
    assert "Traceback" not in res.stderr
