"""Every error minigbp promises, and the promise that inputs are never modified.

Each error test checks the exception type *and* that the message names the layer
(dotted, as ``layer 'features.0'``) and the shapes involved, so a user can find the
problem without a debugger. The second half checks that forward, backprop and every
backward leave their inputs untouched, both by comparing copies and by passing
read-only arrays (a write into them raises instead of silently corrupting).
"""

import numpy as np
import pytest

import minigbp as mg
from minigbp import ops

MODES = mg.MODES


def raises(exc, *fragments):
    """``pytest.raises(exc)`` that also requires every fragment in the message."""

    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            handled = self.ctx.__exit__(*args)
            msg = str(self.info.value.args[0]) if self.info.value.args else ""
            missing = [f for f in fragments if f not in msg]
            assert not missing, f"message {msg!r} lacks {missing}"
            return handled

    return _Check()


def small_net():
    """conv(3->4, pad 1) relu maxpool(2) flatten linear(64->10) relu, 8x8 inputs."""
    mg.manual_seed(0)
    return mg.Sequential(mg.Conv2d(3, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
                         mg.Flatten(), mg.Linear(4 * 4 * 4, 10), mg.ReLU())


def nested_net():
    """The same network with torch-style names: features.0 .. classifier.1."""
    mg.manual_seed(0)
    return mg.Sequential(
        features=mg.Sequential(mg.Conv2d(3, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2)),
        classifier=mg.Sequential(flatten=mg.Flatten(), fc=mg.Linear(4 * 4 * 4, 10)),
    )


def data(shape=(2, 3, 8, 8), dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ------------------------------------------------------------------ input rank

@pytest.mark.parametrize("layers, name, shape, want", [
    ((mg.Conv2d(3, 4, 3),), "0", (3, 8, 8), "4-D"),
    ((mg.ReLU(), mg.MaxPool2d(2)), "1", (2, 3, 8), "4-D"),
    ((mg.ReLU(), mg.AvgPool2d(2)), "1", (2, 24), "4-D"),
    ((mg.AdaptiveAvgPool2d(2),), "0", (2, 3, 8, 8, 1), "4-D"),
    ((mg.ReLU(), mg.Linear(192, 10)), "1", (2, 3, 8, 8), "(N, 192)"),
])
def test_wrong_rank_names_layer_and_shape(layers, name, shape, want):
    model = mg.Sequential(*layers)
    with raises(ValueError, f"layer '{name}'", want, str(shape)):
        model(data(shape))


def test_wrong_rank_bare_layer_names_layer_type():
    with raises(ValueError, "Conv2d(3, 4", "(3, 8, 8)"):
        mg.Conv2d(3, 4, 3)(data((3, 8, 8)))


# -------------------------------------------------------------- channel count

def test_wrong_channel_count_positional():
    with raises(ValueError, "layer '0'", "3 channels", "(2, 5, 8, 8)"):
        small_net()(data((2, 5, 8, 8)))


def test_wrong_channel_count_nested_dotted_name():
    with raises(ValueError, "layer 'features.0'", "3 channels", "(2, 1, 8, 8)"):
        nested_net()(data((2, 1, 8, 8)))


def test_wrong_channel_count_in_a_later_layer():
    model = mg.Sequential(mg.Conv2d(3, 4, 3), mg.ReLU(), mg.Conv2d(5, 2, 1))
    with raises(ValueError, "layer '2'", "5 channels", "(2, 4, 6, 6)"):
        model(data())


def test_wrong_channel_count_ops_level_names_weights_and_input():
    with raises(ValueError, "input has 3 channels", "(4, 2, 3, 3)", "groups=1", "(1, 3, 5, 5)"):
        ops.conv2d_forward(data((1, 3, 5, 5)), data((4, 2, 3, 3)))


# -------------------------------------------------------- spatial size too small

@pytest.mark.parametrize("layer, shape, kernel_words", [
    (mg.Conv2d(3, 4, 3), (2, 3, 2, 2), "effective size (3, 3)"),
    (mg.Conv2d(3, 4, 3, dilation=3), (2, 3, 6, 6), "effective size (7, 7)"),
    (mg.Conv2d(3, 4, (1, 5), padding=(0, 1)), (2, 3, 4, 2), "effective size (1, 5)"),
    (mg.MaxPool2d(3), (2, 3, 2, 8), "kernel_size=(3, 3)"),
    (mg.MaxPool2d(2, dilation=3), (2, 3, 3, 3), "dilation=(3, 3)"),
    (mg.AvgPool2d((2, 4)), (2, 3, 8, 3), "kernel_size=(2, 4)"),
])
def test_too_small_spatial_size(layer, shape, kernel_words):
    model = mg.Sequential(mg.ReLU(), layer)
    with raises(ValueError, "layer '1'", "too small", kernel_words, str(shape)):
        model(data(shape))


def test_too_small_after_earlier_layers_reports_the_intermediate_shape():
    model = mg.Sequential(mg.Conv2d(3, 4, 3), mg.ReLU(), mg.MaxPool2d(2), mg.Conv2d(4, 4, 3))
    # 6x6 -> conv 4x4 -> pool 2x2 -> conv 3x3 does not fit
    with raises(ValueError, "layer '3'", "too small", "(1, 4, 2, 2)"):
        model(data((1, 3, 6, 6)))


# ---------------------------------------------------- flatten / linear mismatch

def test_flatten_linear_mismatch_positional():
    with raises(ValueError, "layer '4'", "in_features=64", "(N, 64)", "(2, 100)"):
        small_net()(data((2, 3, 10, 10)))


def test_flatten_linear_mismatch_nested():
    with raises(ValueError, "layer 'classifier.fc'", "(N, 64)", "(2, 36)"):
        nested_net()(data((2, 3, 6, 6)))


# ---------------------------------------------------------------- unknown mode

@pytest.mark.parametrize("mode", ["Guided", "gradient", "", None])
def test_unknown_mode_everywhere(mode):
    model, x = small_net(), data()
    out, tape = model.forward(x)
    calls = [
        lambda: mg.backprop(model, x, 1, mode=mode),
        lambda: model.backward(np.ones_like(out), tape, mode),
        lambda: ops.relu_backward(x, x, mode),
        lambda: ops.relu_backward_naive(x, x, mode),
        lambda: mg.ReLU().backward(x, x, mode),
    ]
    for call in calls:
        with raises(ValueError, f"unknown mode {mode!r}", "vanilla", "deconvnet", "guided"):
            call()


# ----------------------------------------------------------------------- target

@pytest.mark.parametrize("target, words", [
    (-1, ["target -1", "10 outputs", "(2, 10)"]),
    (10, ["target 10", "10 outputs", "(2, 10)"]),
    (np.int64(12), ["target 12", "(2, 10)"]),
    (np.array([3, -2]), ["target -2", "(2, 10)"]),
    (np.array([3, 10]), ["target 10", "(2, 10)"]),
    (np.array([1, 2, 3]), ["one per sample", "(2,)", "(3,)", "(2, 10)"]),
    ([1], ["one per sample", "(1,)", "(2, 10)"]),
    (np.array([[1], [2]]), ["one per sample", "(2, 1)", "(2, 10)"]),
])
def test_bad_class_target(target, words):
    with raises(ValueError, *words):
        mg.backprop(small_net(), data(), target)


def test_target_out_of_range_at_intermediate_layer_names_the_layer():
    model = nested_net()
    with raises(ValueError, "target 4", "'features.0'", "(2, 4, 8, 8)"):
        mg.backprop(model, data(), 4, layer="features.0")


@pytest.mark.parametrize("seed_shape", [(2, 9), (1, 10), (2, 10, 1), (10,)])
def test_seed_of_wrong_shape(seed_shape):
    with raises(ValueError, "seed shape", str(seed_shape), "(2, 10)"):
        mg.backprop(small_net(), data(), np.ones(seed_shape))


def test_seed_of_wrong_shape_at_intermediate_layer():
    with raises(ValueError, "seed shape", "(2, 4, 4, 4)", "'features.1'", "(2, 4, 8, 8)"):
        mg.backprop(nested_net(), data(), np.ones((2, 4, 4, 4)), layer="features.1")


@pytest.mark.parametrize("target", [True, False, np.True_, np.array([True, False]), [True, False]])
def test_bool_target_is_a_type_error(target):
    with raises(TypeError, "target"):
        mg.backprop(small_net(), data(), target)


def test_class_target_needs_a_class_axis():
    model = mg.Sequential(mg.Flatten(0))
    with raises(ValueError, "class axis", "(384,)"):
        mg.backprop(model, data(), 0)


# ------------------------------------------------------------------ input dtype

@pytest.mark.parametrize("x, words", [
    (np.zeros((2, 3, 8, 8), np.int64), ["int64", "(2, 3, 8, 8)"]),
    (np.zeros((2, 3, 8, 8), np.int32), ["int32", "(2, 3, 8, 8)"]),
    (np.zeros((2, 3, 8, 8), np.float16), ["float16", "(2, 3, 8, 8)"]),
    (np.zeros((2, 3, 8, 8), np.complex128), ["complex128", "(2, 3, 8, 8)"]),
    (np.zeros((2, 3, 8, 8), bool), ["bool", "(2, 3, 8, 8)"]),
    (np.zeros((2, 3, 8, 8)).tolist(), ["list"]),
    (3.0, ["float"]),
])
def test_non_float_input_is_a_type_error(x, words):
    model = small_net()
    for call in (lambda: model(x), lambda: model.forward(x), lambda: mg.backprop(model, x, 1, mode="vanilla")):
        with raises(TypeError, "float32 or float64" if isinstance(x, np.ndarray) else "numpy array", *words):
            call()


@pytest.mark.parametrize("layer", [mg.Conv2d(3, 4, 3), mg.ReLU(), mg.MaxPool2d(2), mg.AvgPool2d(2),
                                   mg.AdaptiveAvgPool2d(1), mg.Flatten(), mg.Dropout()])
def test_every_layer_rejects_float16_and_int(layer):
    for dtype in (np.float16, np.int64):
        with raises(TypeError, type(layer).__name__, np.dtype(dtype).name):
            layer(np.zeros((1, 3, 4, 4), dtype))


def test_linear_rejects_int_input():
    with raises(TypeError, "Linear", "int64", "(2, 4)"):
        mg.Linear(4, 2)(np.zeros((2, 4), np.int64))


# ------------------------------------------------------------- constructor args

@pytest.mark.parametrize("make, words", [
    (lambda: mg.Conv2d(3, 4, 3, groups=2), ["in_channels=3", "groups=2"]),
    (lambda: mg.Conv2d(4, 6, 3, groups=4), ["out_channels=6", "groups=4"]),
    (lambda: mg.Conv2d(3, 4, 3, groups=0), ["groups", "0"]),
    (lambda: mg.MaxPool2d(2, padding=2), ["padding", "(2, 2)", "kernel_size=(2, 2)"]),
    (lambda: mg.MaxPool2d((4, 3), padding=(1, 2)), ["padding", "(1, 2)", "kernel_size=(4, 3)"]),
    (lambda: mg.AvgPool2d(3, padding=2), ["padding", "(2, 2)", "kernel_size=(3, 3)"]),
    (lambda: mg.Conv2d(3, 4, 3, stride=0), ["stride", "(0, 0)"]),
    (lambda: mg.Conv2d(3, 4, 3, stride=(1, 0)), ["stride", "(1, 0)"]),
    (lambda: mg.MaxPool2d(2, stride=0), ["stride=(0, 0)"]),
    (lambda: mg.AvgPool2d(2, stride=(0, 1)), ["stride=(0, 1)"]),
    (lambda: mg.Conv2d(3, 4, 3, stride=2, padding="same"), ["same", "stride=(2, 2)"]),
    (lambda: mg.Conv2d(3, 4, 2, padding="same"), ["same", "kernel_size=(2, 2)"]),
    (lambda: mg.Conv2d(3, 4, (3, 4), padding="same"), ["same", "kernel_size=(3, 4)"]),
    (lambda: mg.Conv2d(3, 4, 0), ["kernel_size", "(0, 0)"]),
    (lambda: mg.Conv2d(3, 4, 3, dilation=0), ["dilation", "(0, 0)"]),
    (lambda: mg.Conv2d(3, 4, 3, padding=-1), ["padding", "(-1, -1)"]),
    (lambda: mg.MaxPool2d(2, dilation=0), ["dilation=(0, 0)"]),
    (lambda: mg.Linear(0, 3), ["in_features", "0"]),
    (lambda: mg.AdaptiveAvgPool2d(0), ["output_size"]),
    (lambda: mg.Dropout(1.5), ["p", "1.5"]),
])
def test_bad_constructor_arguments(make, words):
    with raises(ValueError, *words):
        make()


@pytest.mark.parametrize("make, words", [
    (lambda: mg.Conv2d(3, 4, True), ["kernel_size", "True"]),
    (lambda: mg.Conv2d(3, 4, 3, padding="full"), ["padding", "full"]),
    (lambda: mg.Conv2d(3, 4, 3, padding=(1, 2, 3)), ["padding", "(1, 2, 3)"]),
    (lambda: mg.MaxPool2d(2.5), ["kernel_size", "2.5"]),
    (lambda: mg.Sequential(mg.ReLU(), relu=mg.ReLU()), ["positionally", "by name"]),
    (lambda: mg.Sequential(mg.ReLU(), 3), ["'1'", "3"]),
])
def test_bad_constructor_types(make, words):
    with raises(TypeError, *words):
        make()


def test_dotted_child_name_rejected():
    with raises(ValueError, "'a.b'"):
        mg.Sequential(**{"a.b": mg.ReLU()})


def test_same_padding_accepted_where_symmetric():
    # the valid counterpart of the rejected cases: dilation 2 makes an even kernel symmetric
    assert mg.Conv2d(3, 4, 2, padding="same", dilation=2).padding == (1, 1)
    assert mg.Conv2d(3, 4, (3, 5), padding="same").padding == (1, 2)


# ---------------------------------------------------------------- state_dict

def _copies(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _assert_unchanged(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert after[k].dtype == before[k].dtype and np.array_equal(after[k], before[k]), k


def test_bad_state_dict_one_error_listing_every_problem_and_nothing_loaded():
    model = nested_net()
    before = _copies(model)
    bad = {k: v + 1.0 for k, v in before.items()}  # valid values that must NOT end up loaded
    del bad["features.0.bias"]                                        # missing
    bad["features.9.weight"] = np.zeros(3)                            # unknown
    bad["classifier.fc.weight"] = np.zeros((10, 63))                  # wrong shape
    bad["features.0.weight"] = before["features.0.weight"].astype(np.int32)  # int dtype
    with raises(ValueError, "4 problem", "missing key 'features.0.bias'", "(4,)",
                "unexpected key 'features.9.weight'",
                "'classifier.fc.weight'", "(10, 63)", "(10, 64)",
                "'features.0.weight'", "int32") as info:
        model.load_state_dict(bad)
    assert "nothing was loaded" in str(info.value)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("key, value, words", [
    ("features.0.weight", np.zeros((4, 3, 3, 3), np.int64), ["int64"]),
    ("features.0.weight", np.zeros((4, 3, 3, 3), bool), ["bool"]),
    ("features.0.weight", np.zeros((4, 3, 3, 3), np.complex64), ["complex64"]),
    ("features.0.weight", np.zeros((4, 3, 3)), ["(4, 3, 3)", "(4, 3, 3, 3)"]),
    ("classifier.fc.bias", np.zeros((1, 10)), ["(1, 10)", "(10,)"]),
])
def test_single_bad_entry_even_non_strict(key, value, words):
    model = nested_net()
    before = _copies(model)
    for strict in (True, False):
        sd = _copies(model) if strict else {}
        sd = {k: v * 2 for k, v in sd.items()}
        sd[key] = value
        with raises(ValueError, "1 problem", repr(key), *words):
            model.load_state_dict(sd, strict=strict)
        _assert_unchanged(model, before)


def test_strict_missing_and_unexpected_only():
    model = small_net()
    before = _copies(model)
    with raises(ValueError, "2 problem", "missing key '4.bias'", "unexpected key 'extra'"):
        model.load_state_dict({"0.weight": before["0.weight"] * 3, "0.bias": before["0.bias"],
                               "4.weight": before["4.weight"], "extra": np.zeros(1)})
    _assert_unchanged(model, before)


def test_state_dict_not_a_mapping():
    with raises(TypeError, "dict", "list"):
        small_net().load_state_dict([("0.weight", np.zeros((4, 3, 3, 3)))])


# -------------------------------------------------------------- unknown names

def test_unknown_start_layer_lists_available_names():
    with raises(ValueError, "'features.7'", "did you mean", "features.0, features.1, features.2, "
                "classifier.flatten, classifier.fc"):
        mg.backprop(nested_net(), data(), 0, layer="features.7")


def test_unknown_upto_lists_available_names():
    with raises(ValueError, "'fc'", "classifier.fc"):
        nested_net().forward(data(), upto="fc")


def test_unknown_getitem_lists_available_names():
    with raises(KeyError, "'classifier.0'", "classifier.flatten", "features.2"):
        nested_net()["classifier.0"]


def test_layer_argument_needs_a_sequential():
    with raises(ValueError, "layer", "Sequential"):
        mg.backprop(mg.ReLU(), data(), np.ones((2, 3, 8, 8)), layer="0")


# ---------------------------------------------------------------------------
# Inputs are never modified.

def everything_net():
    """Every layer type once, float64 weights; input (2, 4, 9, 9)."""
    mg.manual_seed(3)
    model = mg.Sequential(
        features=mg.Sequential(
            mg.Conv2d(4, 6, 3, stride=1, padding=1, groups=2), mg.ReLU(),
            mg.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),          # 9 -> 5
            mg.Conv2d(6, 6, 3, dilation=2, padding=2, bias=False), mg.ReLU(),
            mg.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),  # 5 -> 6
            mg.AdaptiveAvgPool2d((3, 2)),
        ),
        classifier=mg.Sequential(mg.Flatten(), mg.Dropout(), mg.Linear(36, 8), mg.ReLU(), mg.Linear(8, 5)),
    )
    model.load_state_dict({k: v.astype(np.float64) for k, v in model.state_dict().items()})
    return model


def readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backprop_leave_input_unchanged(dtype):
    model = everything_net()
    params = _copies(model)
    x = data((2, 4, 9, 9), dtype, seed=1)
    x_copy = x.copy()
    for mode in MODES:
        for target in (2, np.array([4, 0]), data((2, 5), dtype, seed=2)):
            seed_copy = np.array(target, copy=True)
            dx = mg.backprop(model, x, target, mode=mode)
            assert dx.shape == x.shape and dx.dtype == x.dtype
            assert np.array_equal(x, x_copy)
            assert np.array_equal(target, seed_copy)
        model(x)
        assert np.array_equal(x, x_copy)
    _assert_unchanged(model, params)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_input_and_seed(dtype):
    model = everything_net()
    x = readonly(data((2, 4, 9, 9), dtype, seed=1))
    seed = readonly(data((2, 5), dtype, seed=2))
    for mode in MODES:
        ref = mg.backprop(model, x.copy(), seed.copy(), mode=mode)
        got = mg.backprop(model, x, seed, mode=mode)
        assert np.array_equal(got, ref)
        # intermediate start layer with a read-only 4-D seed
        inner = readonly(data((2, 6, 5, 5), dtype, seed=3))
        got = mg.backprop(model, x, inner, mode=mode, layer="features.2")
        assert np.array_equal(got, mg.backprop(model, x.copy(), inner.copy(), mode=mode, layer="features.2"))


def test_read_only_parameters():
    model = everything_net()
    for _, p in model.named_parameters():
        p.setflags(write=False)
    x = data((2, 4, 9, 9), seed=1)
    for mode in MODES:
        assert mg.backprop(model, x, 1, mode=mode).shape == x.shape
    out, tape = model.forward(x)
    dx, grads = model.backward_with_grads(np.ones_like(out), tape)
    assert set(grads) == set(model.state_dict())


LAYER_CASES = [
    ("conv_pad_groups", lambda: mg.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 7, 7)),
    ("conv_nopad_dil", lambda: mg.Conv2d(4, 3, 2, dilation=2, bias=False), (2, 4, 6, 5)),
    ("linear", lambda: mg.Linear(5, 3), (4, 5)),
    ("relu", mg.ReLU, (2, 3, 4, 4)),
    ("maxpool_overlap_ceil", lambda: mg.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 6, 6)),
    ("maxpool", lambda: mg.MaxPool2d(2), (2, 3, 4, 4)),
    ("avgpool", lambda: mg.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 3, 6, 6)),
    ("adaptive", lambda: mg.AdaptiveAvgPool2d((3, None)), (2, 3, 5, 4)),
    ("flatten", mg.Flatten, (2, 3, 4, 4)),
    ("dropout", mg.Dropout, (2, 3, 4, 4)),
]


@pytest.mark.parametrize("name, make, shape", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_every_layer_backward_leaves_dout_and_cache_unchanged(name, make, shape):
    mg.manual_seed(0)
    layer = make()
    x = data(shape, seed=5)
    x_copy = x.copy()
    out, cache = layer.forward(x)
    rng = np.random.default_rng(6)
    for mode in MODES:
        dout = rng.standard_normal(out.shape)
        dout_copy = dout.copy()
        dx = layer.backward(dout, cache, mode)
        grads = layer.param_grads(dout, cache)
        assert np.array_equal(dout, dout_copy) and np.array_equal(x, x_copy)
        # the same with read-only arrays: any write would raise
        xr = readonly(x)
        out_r, cache_r = layer.forward(xr)
        assert np.array_equal(out_r, out)
        dr = readonly(dout)
        assert np.array_equal(layer.backward(dr, cache_r, mode), dx)
        grads_r = layer.param_grads(dr, cache_r)
        assert grads_r.keys() == grads.keys()
        for k in grads:
            assert np.array_equal(grads_r[k], grads[k])


def _ops_cases():
    rng = np.random.default_rng(7)
    x4 = rng.standard_normal((2, 4, 6, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    x2, wl, bl = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    conv = dict(stride=2, padding=1, dilation=1, groups=2)
    mp = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    ap = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    return [
        ("conv", lambda x: ops.conv2d_forward(x, w, b, **conv), ops.conv2d_backward, x4),
        ("conv_naive", lambda x: ops.conv2d_forward_naive(x, w, b, **conv), ops.conv2d_backward_naive, x4),
        ("linear", lambda x: ops.linear_forward(x, wl, bl), ops.linear_backward, x2),
        ("linear_naive", lambda x: ops.linear_forward_naive(x, wl, bl), ops.linear_backward_naive, x2),
        ("maxpool", lambda x: ops.maxpool2d_forward(x, **mp), ops.maxpool2d_backward, x4),
        ("maxpool_naive", lambda x: ops.maxpool2d_forward_naive(x, **mp), ops.maxpool2d_backward_naive, x4),
        ("avgpool", lambda x: ops.avgpool2d_forward(x, **ap), ops.avgpool2d_backward, x4),
        ("avgpool_naive", lambda x: ops.avgpool2d_forward_naive(x, **ap), ops.avgpool2d_backward_naive, x4),
        ("adaptive", lambda x: ops.adaptive_avgpool2d_forward(x, (4, 5)), ops.adaptive_avgpool2d_backward, x4),
        ("adaptive_naive", lambda x: ops.adaptive_avgpool2d_forward_naive(x, (4, 5)),
         ops.adaptive_avgpool2d_backward_naive, x4),
        ("relu", ops.relu_forward, ops.relu_backward, x4),
        ("relu_naive", ops.relu_forward, ops.relu_backward_naive, x4),
    ]


@pytest.mark.parametrize("case", _ops_cases(), ids=lambda c: c[0])
def test_ops_backward_with_read_only_dout_and_cache(case):
    name, fwd, bwd, x = case
    out, cache = fwd(x.copy())
    dout = np.random.default_rng(8).standard_normal(out.shape)
    modes = MODES if name.startswith("relu") else (None,)
    for mode in modes:
        args = () if mode is None else (mode,)
        ref = bwd(dout.copy(), cache, *args)
        out_r, cache_r = fwd(readonly(x))
        got = bwd(readonly(dout), cache_r, *args)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = got if isinstance(got, tuple) else (got,)
        for r, g in zip(ref, got):
            assert (r is None and g is None) or np.array_equal(r, g)


def test_sequential_backward_leaves_dout_unchanged():
    model = everything_net()
    x = data((2, 4, 9, 9), seed=1)
    out, tape = model.forward(x)
    dout = np.random.default_rng(9).standard_normal(out.shape)
    dout_copy = dout.copy()
    for mode in MODES:
        ref = model.backward(dout, tape, mode)
        assert np.array_equal(dout, dout_copy)
        assert np.array_equal(model.backward(readonly(dout), tape, mode), ref)
    dx, grads = model.backward_with_grads(readonly(dout), tape)
    assert np.array_equal(dx, model.backward(dout, tape, "vanilla"))


def test_backprop_result_does_not_alias_the_seed():
    # identity-like models: the seed must still be copied, never handed back
    for model in (mg.Sequential(mg.Dropout()), mg.Sequential(mg.Flatten())):
        x = data((2, 3))
        seed = data((2, 3), seed=4)
        dx = mg.backprop(model, x, seed, mode="vanilla")
        assert np.array_equal(dx, seed) and not np.shares_memory(dx, seed)
        dx[...] = 0
        assert not np.array_equal(seed, 0 * seed)


# ------------------------------------------------------- Sequential.backward's dout

@pytest.mark.parametrize("dout_shape", [(1, 10), (2, 9), (10,), (2, 10, 1)])
def test_sequential_backward_rejects_dout_of_wrong_shape(dout_shape):
    # small_net ends with a ReLU, where a (1, 10) signal would otherwise broadcast silently
    model = small_net()
    out, tape = model.forward(data())
    with raises(ValueError, "layer '5'", "(2, 10)", str(dout_shape)):
        model.backward(np.ones(dout_shape), tape)


def test_sequential_backward_rejects_dout_of_wrong_shape_after_upto():
    model = nested_net()
    out, tape = model.forward(data(), upto="features.1")
    with raises(ValueError, "layer 'features.1'", "(2, 4, 8, 8)", "(2, 4, 4, 4)"):
        model.backward(np.ones((2, 4, 4, 4)), tape, "guided")


def test_sequential_backward_rejects_dout_of_another_dtype():
    # nothing is silently upcast: a float64 signal into a float32 tape is refused
    model = small_net()
    out, tape = model.forward(data(dtype=np.float32))
    with raises(ValueError, "layer '5'", "(2, 10)", "float32", "float64"):
        model.backward(np.ones((2, 10)), tape)
