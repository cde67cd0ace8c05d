"""One vocabulary: every entry point that runs a backward pass takes the same targets and the
same convention arguments, and gives the same array.

``mg.backprop``, ``mg.trace(...).result``, ``explain.attribute`` and ``Graph.backward`` (after
``Graph.forward``) are called with every target form (int, int array, seed array, "top1",
"K", "class:K", "layer:NAME", "channel:NAME:C", "neuron:NAME:C:Y:X", a Target) and every way
of giving conventions (keyword switches, ``preset=``, ``conventions=``, a preset with a
switch on top), in every mode; all results must be identical arrays. Misspelled keywords are
a ``TypeError`` everywhere.
"""

import numpy as np
import pytest

import minigbp as mg
from minigbp import explain as E
from minigbp.targets import Target, as_target

MODES = mg.MODES


@pytest.fixture(scope="module")
def model_x():
    model = mg.zoo.digits()
    images, _ = mg.zoo.digits_test_data()
    x = mg.zoo.digits_preprocess(images[:3]).astype(np.float64)
    x[:, :, :4, :4] = 0  # exact zeros at the first ReLUs: relu_at_zero matters
    return model, x


def targets(model, x):
    out = model(x)
    seed = np.random.default_rng(0).standard_normal(out.shape)
    return [3, np.array([3, 1, 4]), seed, "top1", "7", "class:7", "layer:features.5", "channel:features.3:5",
            "neuron:features.3:5:4:4", Target("channel", 2, "features.7")]


CONVENTIONS = [
    {},
    {"relu_at_zero": "pass", "pool_ties": "split"},
    {"preset": "torchray"},
    {"preset": "zennit", "seed": "one"},
    {"conventions": mg.Conventions(relu_scope="features.*", seed="value")},
]


@pytest.mark.parametrize("kwargs", CONVENTIONS)
@pytest.mark.parametrize("mode", MODES)
def test_backprop_trace_attribute_and_backward_agree(model_x, mode, kwargs):
    model, x = model_x
    for target in targets(model, x):
        want = mg.backprop(model, x, target, mode, **kwargs)
        assert np.array_equal(mg.trace(model, x, target, mode, **kwargs).result, want)
        assert np.array_equal(E.attribute(model, x, target, mode, **kwargs), want)
        t = as_target(target)
        out, tape = model.forward(x, upto=t.layer)
        rules = mg.conventions.resolve(kwargs.get("preset"), mode, kwargs.get("conventions"),
                                       {k: v for k, v in kwargs.items() if k not in ("preset", "conventions")})
        assert np.array_equal(model.backward(t.seed(out, rules.seed), tape, mode, **kwargs), want)
        assert want.shape == x.shape and want.dtype == x.dtype and np.abs(want).max() > 0


def test_the_seed_switch_means_the_seed_convention_everywhere(model_x):
    model, x = model_x
    one = mg.backprop(model, x, 3, "vanilla")
    value = mg.backprop(model, x, 3, "vanilla", seed="value")
    logits = model(x)[:, 3]
    # vanilla is linear in the seed: the logit's value as seed scales each sample's map by it
    np.testing.assert_allclose(value, one * logits[:, None, None, None], rtol=1e-12, atol=0)
    for fn in (lambda **k: mg.trace(model, x, 3, "vanilla", **k).result,
               lambda **k: E.attribute(model, x, 3, "vanilla", **k)):
        assert np.array_equal(fn(seed="value"), value) and np.array_equal(fn(), one)


@pytest.mark.parametrize("call", [
    lambda m, x: mg.backprop(m, x, 3, "guided", relu_at_zeroo="pass"),
    lambda m, x: mg.trace(m, x, 3, "guided", pool_tie="split"),
    lambda m, x: E.attribute(m, x, 3, mode="guided", method="guided"),
    lambda m, x: E.attribute(m, x, 3, mode="guided", noise="x"),
    lambda m, x: mg.projections(m, x, "features.7", 0, sed="one"),
    lambda m, x: m.backward(np.ones((3, 10)), m.forward(x)[1], "guided", scope="features.*"),
])
def test_misspelled_keywords_are_type_errors(model_x, call):
    model, x = model_x
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        call(model, x)


def test_preset_and_conventions_together_are_refused(model_x):
    model, x = model_x
    with pytest.raises(TypeError, match="preset= or conventions="):
        mg.backprop(model, x, 3, preset="captum", conventions=mg.Conventions())


def test_a_target_that_names_its_layer_and_another_layer_is_refused(model_x):
    model, x = model_x
    with pytest.raises(ValueError, match="starts at 'features.3', not at layer='features.5'"):
        mg.backprop(model, x, "channel:features.3:2", layer="features.5")
    assert np.array_equal(mg.backprop(model, x, 2, layer="features.3"),
                          mg.backprop(model, x, "channel:features.3:2"))
