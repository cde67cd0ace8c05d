"""Gradient checking: the helpers in ``minigbp.gradcheck`` and central differences
of whole small networks (oracle 3 of DESIGN.md).

Tolerance. Every network here is built from convolutions, linear layers, average
pooling, ReLU and max pooling, so away from kinks (a ReLU input at 0, tied maxima)
it is *piecewise linear* in the input and in each parameter tensor. Along a probe
``x +- h e_i`` that stays inside one linear piece the central difference has no
truncation error at all (that is why a large step is allowed); what remains is
rounding, about ``eps * |f| / h`` = 1e-16 * 10 / 1e-3 ~ 1e-12 absolute at the usual
step, 1e-10 at the smallest one tried (1e-5). That is below 1e-6 relative for every
gradient entry above ~1e-4, and entries are O(0.1..10) here (``rel_error`` measures the
largest error against the largest entry). Measured errors are 1e-15..1e-7. A real
bug (a missing tap, a wrong stride, a flipped kernel, a misrouted switch) gives >= 1e-2,
as the tests with deliberately broken layers show. So each check asserts
``rel_error < 1e-6``.

"Away from kinks" is verified, not assumed: every probe re-runs the forward pass and
compares the activation pattern (the sign of every ReLU input and every max-pooling
switch) with the unperturbed one. Per tensor, the largest step of 1e-3, 1e-4, 1e-5
that changes no pattern is used (a bias probe shifts a whole channel, so parameters
sometimes need the smaller steps); if none works, the next fixed seed is drawn. Data
is continuous random float64 and the seeds are fixed, so the test is deterministic.
Single layers given to ``mg.check_layer`` get data that is away from kinks by
construction (|x| >= 0.1 at ReLUs, maxima separated by >= 0.05).
"""

import numpy as np
import pytest

import minigbp as mg

TOL = 1e-6


# ------------------------------------------------------------------ rel_error

@pytest.mark.parametrize("got, want, expected", [
    (1.0, 1.0, 0.0),
    (1.0, 3.0, 2 / 3),                         # |1-3| / 3
    ([1.0, 2.0], [1.0, 2.0 + 4e-6], 4e-6 / (2 + 4e-6)),
    ([1.0, 10.0], [1.0, 30.0], 20 / 30),       # the largest error over the largest reference value
    ([-2.0, 5.0], [2.0, 5.0], 4 / 5),
    ([1e-9, 1.0], [0.0, 1.0], 1e-9),           # a tiny entry's error is small against the array's size
    ([0.0], [0.0], 0.0),
    ([2.0], [0.0], 1.0),                       # an all-zero reference: measured against got
    ([[1.0, 0.0], [0.0, 4.0]], [[1.0, 0.0], [0.0, 5.0]], 1 / 5),
    ([np.nan, 1.0], [np.nan, 1.0], 0.0),       # NaN matches NaN
    ([np.inf, 1.0], [np.inf, 1.0], 0.0),
    ([np.nan, 1.0], [0.0, 1.0], np.inf),       # NaN on one side only
    (np.zeros((0, 3)), np.zeros((0, 3)), 0.0),
])
def test_rel_error_known_values(got, want, expected):
    value = mg.rel_error(got, want)
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_rel_error_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2,\) vs \(3,\)"):
        mg.rel_error(np.zeros(2), np.zeros(3))


def test_rel_error_accepts_float32_and_computes_in_float64():
    a = np.float32(1.0)
    b = np.float32(1.0) + np.finfo(np.float32).eps
    assert mg.rel_error(a, b) == pytest.approx(np.finfo(np.float32).eps / (1 + np.finfo(np.float32).eps), rel=1e-6)


# ----------------------------------------------------------- numerical_gradient

def test_numerical_gradient_of_a_quadratic_is_exact():
    x = np.random.default_rng(0).standard_normal((3, 4))
    x_copy = x.copy()
    g = mg.numerical_gradient(lambda z: np.sum(z ** 2), x, h=1e-3)
    assert g.shape == x.shape and g.dtype == np.float64
    # ((x+h)^2 - (x-h)^2) / 2h = 2x exactly; only rounding remains
    assert mg.rel_error(g, 2 * x) < 1e-10
    assert np.array_equal(x, x_copy)


def test_numerical_gradient_error_is_h_squared_for_a_cubic():
    x = np.linspace(-1, 2, 7)
    for h in (1e-1, 1e-2):
        g = mg.numerical_gradient(lambda z: np.sum(z ** 3), x, h=h)
        # ((x+h)^3 - (x-h)^3) / 2h = 3x^2 + h^2: the O(h^2) term, exactly
        assert np.allclose(g - 3 * x ** 2, h ** 2, rtol=1e-6, atol=1e-9)


def test_numerical_gradient_accepts_lists_and_float32():
    g = mg.numerical_gradient(lambda z: float(z[0] * z[1]), [2.0, 3.0], h=1e-4)
    assert np.allclose(g, [3.0, 2.0], rtol=0, atol=1e-10)
    x32 = np.array([[1.5, -2.0]], np.float32)
    g = mg.numerical_gradient(lambda z: np.sum(np.sin(z)), x32, h=1e-5)
    assert g.dtype == np.float64 and np.allclose(g, np.cos(x32.astype(np.float64)), rtol=0, atol=1e-9)


def test_numerical_gradient_array_of_a_linear_map():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 3))
    x = rng.standard_normal((4, 3))
    dout = rng.standard_normal((4, 5))
    g = mg.numerical_gradient_array(lambda z: z @ A.T, x, dout, h=1e-4)
    assert g.shape == x.shape
    assert mg.rel_error(g, dout @ A) < 1e-9


def test_numerical_gradient_array_elementwise():
    x = np.array([[0.5, -1.0, 2.0]])
    dout = np.array([[1.0, 2.0, -3.0]])
    g = mg.numerical_gradient_array(np.exp, x, dout, h=1e-6)
    assert mg.rel_error(g, dout * np.exp(x)) < 1e-8


# ------------------------------------------------------------------ check_layer

def away_from_zero(shape, seed, margin=0.1):
    """Random float64 with |value| >= margin: no ReLU kink within reach of h."""
    z = np.random.default_rng(seed).standard_normal(shape)
    return np.sign(z) * (margin + np.abs(z))


def distinct_values(shape, seed, gap=0.05):
    """A random permutation of values spaced at least ``gap`` apart: no tied maxima nearby."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    vals = (np.arange(n) - n / 2) * gap * 2 + rng.uniform(0, gap, n)
    return rng.permutation(vals).reshape(shape)


def float64_layer(layer):
    for name, p in layer.named_parameters():
        setattr(layer, name, p.astype(np.float64))
    return layer


@pytest.mark.parametrize("make, x", [
    (lambda: mg.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2), away_from_zero((2, 4, 7, 6), 0)),
    (lambda: mg.Conv2d(3, 2, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), away_from_zero((2, 3, 6, 5), 1)),
    (lambda: mg.Conv2d(2, 2, 1, bias=False), away_from_zero((1, 2, 3, 3), 2)),
    (lambda: mg.Linear(7, 4), away_from_zero((3, 7), 3)),
    (lambda: mg.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), away_from_zero((2, 2, 6, 7), 4)),
    (lambda: mg.AvgPool2d(2, stride=1, padding=1), away_from_zero((1, 2, 4, 4), 5)),
    (lambda: mg.AdaptiveAvgPool2d((3, 4)), away_from_zero((2, 2, 5, 7), 6)),
    (mg.ReLU, away_from_zero((2, 3, 4, 4), 7)),
    (lambda: mg.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), distinct_values((2, 2, 6, 6), 8)),
    (lambda: mg.MaxPool2d(2, stride=1, dilation=2), distinct_values((1, 3, 5, 6), 9)),
    (mg.Flatten, away_from_zero((2, 3, 2, 2), 10)),
])
def test_check_layer_passes_on_correct_layers(make, x):
    mg.manual_seed(0)
    layer = float64_layer(make())
    before = {n: p.copy() for n, p in layer.named_parameters()}
    errors = mg.check_layer(layer, x, h=1e-4)
    assert set(errors) == {"x"} | set(before)  # a single layer's parameter names, unprefixed
    assert all(e < TOL for e in errors.values()), errors
    # check_layer works on a float64 copy: the caller's parameters are untouched
    assert all(np.array_equal(getattr(layer, n), v) and getattr(layer, n).dtype == v.dtype for n, v in before.items())


def test_check_layer_on_a_sequential_uses_its_names():
    mg.manual_seed(1)
    model = mg.Sequential(feat=mg.Sequential(float64_layer(mg.Conv2d(2, 3, 3)), mg.Flatten()),
                          head=float64_layer(mg.Linear(3, 2)))
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    errors = mg.check_layer(model, x, h=1e-4)
    assert set(errors) == {"x", "feat.0.weight", "feat.0.bias", "head.weight", "head.bias"}
    assert max(errors.values()) < TOL


class _WrongBackward(mg.Linear):
    def backward(self, dout, cache, mode="vanilla", conventions=mg.conventions.DEFAULT):
        return 1.01 * super().backward(dout, cache, mode)


class _WrongWeightGrad(mg.Conv2d):
    def param_grads(self, dout, cache):
        grads = super().param_grads(dout, cache)
        grads["weight"] = grads["weight"][:, :, ::-1, ::-1]  # flipped kernel: a classic bug
        return grads


def test_check_layer_detects_wrong_gradients():
    mg.manual_seed(2)
    errors = mg.check_layer(float64_layer(_WrongBackward(5, 3)), away_from_zero((2, 5), 0), h=1e-4)
    assert errors["x"] > 1e-3 and errors["weight"] < TOL
    errors = mg.check_layer(float64_layer(_WrongWeightGrad(2, 2, 3)), away_from_zero((1, 2, 5, 5), 1), h=1e-4)
    assert errors["weight"] > 1e-2 and errors["x"] < TOL and errors["bias"] < TOL


def test_check_layer_explicit_dout_and_float32_parameters():
    mg.manual_seed(3)
    layer = mg.Linear(4, 3)  # float32 parameters: check_layer computes in float64
    x = away_from_zero((2, 4), 0)
    dout = np.ones((2, 3))
    errors = mg.check_layer(layer, x, dout=dout, h=1e-4)
    assert max(errors.values()) < TOL
    assert layer.weight.dtype == np.float32  # restored as it was


def test_check_layer_accepts_float32_dout_like_it_accepts_float32_x():
    mg.manual_seed(3)
    layer = mg.Linear(4, 3)
    x = away_from_zero((2, 4), 0).astype(np.float32)
    errors = mg.check_layer(layer, x, dout=np.ones((2, 3), np.float32), h=1e-4)
    assert max(errors.values()) < TOL


# -------------------------------------------------------- whole networks, float64

def activation_pattern(model, x):
    """Output, plus every ReLU's sign mask and every max pool's switches."""
    out, tape = model.forward(x)
    pattern = []
    for _, layer, cache in tape:
        if isinstance(layer, mg.ReLU):
            pattern.append(cache > 0)
        elif isinstance(layer, mg.MaxPool2d):
            pattern.append(cache[0])
    return out, pattern


def same_pattern(p, q):
    return all(np.array_equal(a, b) for a, b in zip(p, q))


STEPS = (1e-3, 1e-4, 1e-5)


def linear_piece_gradient(f, x, dout, base):
    """Central differences of ``sum(out * dout)``, ``out, pattern = f(x)``, with the largest
    step in :data:`STEPS` for which no probe changes the activation pattern from ``base``.
    Returns ``(gradient, h)``, or ``(None, None)`` if every step crosses a kink."""
    for h in STEPS:
        crossed = []

        def probe(z):
            out, pattern = f(z)
            if not same_pattern(pattern, base):
                crossed.append(1)
            return out

        g = mg.numerical_gradient_array(probe, x, dout, h)
        if not crossed:
            return g, h
    return None, None


def network_gradcheck(make, shape, max_seeds=10):
    """Analytic vs central differences for the input and every parameter.

    Returns ``(errors, steps, seed)`` keyed ``"x"`` and by parameter name, for the first
    seed where every tensor has a step that keeps all its probes in one linear piece.
    """
    for seed in range(max_seeds):
        mg.manual_seed(seed)
        model = make()
        model.load_state_dict({k: v.astype(np.float64) for k, v in model.state_dict().items()})
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape)
        out, base = activation_pattern(model, x)
        dout = rng.standard_normal(out.shape)
        out, tape = model.forward(x)
        dx, grads = model.backward_with_grads(dout, tape)
        assert list(grads) == list(model.state_dict())  # every parameter gets a gradient
        numeric, h = linear_piece_gradient(lambda z: activation_pattern(model, z), x, dout, base)
        if numeric is None:
            continue
        errors, steps = {"x": mg.rel_error(dx, numeric)}, {"x": h}
        leaves = dict(model.named_leaves())
        for key, analytic in grads.items():
            lname, pname = key.rsplit(".", 1)
            layer = leaves[lname]
            original = getattr(layer, pname)

            def f(p, layer=layer, pname=pname):
                setattr(layer, pname, p)
                return activation_pattern(model, x)

            try:
                numeric, h = linear_piece_gradient(f, original, dout, base)
            finally:
                setattr(layer, pname, original)
            if numeric is None:
                break
            assert analytic.shape == original.shape and analytic.dtype == np.float64
            errors[key], steps[key] = mg.rel_error(analytic, numeric), h
        else:
            return errors, steps, seed
    raise AssertionError(f"no seed in range({max_seeds}) kept every probe away from kinks")


NETWORKS = {
    # strided + padded conv, dilated grouped conv, overlapping max pool, linear
    "conv_stride_dilation_groups_maxpool": (lambda: mg.Sequential(
        mg.Conv2d(3, 4, 3, stride=2, padding=1), mg.ReLU(),
        mg.Conv2d(4, 6, 3, dilation=2, padding=2, groups=2), mg.ReLU(),
        mg.MaxPool2d(3, stride=2, padding=1),
        mg.Flatten(), mg.Linear(6 * 3 * 3, 5)), (2, 3, 9, 9)),
    # rectangular kernel/stride, avg pool (ceil, count_include_pad=False), adaptive pool, MLP head
    "avgpool_adaptive_mlp": (lambda: mg.Sequential(
        mg.Conv2d(2, 4, (3, 2), stride=(1, 2), padding=(1, 0)), mg.ReLU(),
        mg.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        mg.Conv2d(4, 4, 2, bias=False), mg.ReLU(),
        mg.AdaptiveAvgPool2d((2, 3)),
        mg.Flatten(), mg.Linear(24, 6), mg.ReLU(), mg.Dropout(), mg.Linear(6, 4)), (2, 2, 8, 9)),
    # 'same' padding, dilated ceil-mode max pool, 1x1 conv, padded avg pool; nested names
    "nested_dilated_ceil_maxpool": (lambda: mg.Sequential(
        features=mg.Sequential(
            mg.Conv2d(2, 3, 3, padding="same"), mg.ReLU(),
            mg.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
            mg.Conv2d(3, 4, 1), mg.ReLU(),
            mg.AvgPool2d(2, stride=1, padding=1)),
        classifier=mg.Sequential(mg.Flatten(), mg.Linear(4 * 5 * 5, 3))), (2, 2, 9, 9)),
    # max pool with (2, 3) windows, stride (1, 2), then adaptive pool up-sampling (overlapping bins)
    "rect_maxpool_adaptive_upsample": (lambda: mg.Sequential(
        mg.Conv2d(1, 3, 2, padding=1), mg.ReLU(),
        mg.MaxPool2d((2, 3), stride=(1, 2)),
        mg.AdaptiveAvgPool2d((7, 5)), mg.Conv2d(3, 2, 3, groups=1), mg.ReLU(),
        mg.Flatten(), mg.Linear(2 * 5 * 3, 3)), (3, 1, 6, 7)),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_gradients_match_central_differences(name):
    make, shape = NETWORKS[name]
    errors, steps, seed = network_gradcheck(make, shape)
    mg.manual_seed(seed)
    assert set(errors) == {"x"} | set(make().state_dict())
    bad = {k: (e, steps[k]) for k, e in errors.items() if not e < TOL}
    assert not bad, f"seed {seed}: rel_error >= {TOL} (error, step): {bad}"


def test_network_gradcheck_would_catch_a_routing_bug():
    """The harness is not vacuous: a max pool that routes to the wrong tap is caught."""

    class ShiftedMaxPool(mg.MaxPool2d):  # routes every switch's signal one column too far
        def backward(self, dout, cache, mode="vanilla", conventions=mg.conventions.DEFAULT):
            return np.roll(super().backward(dout, cache, mode), 1, axis=-1)

    make = lambda: mg.Sequential(mg.Conv2d(2, 3, 3), mg.ReLU(), ShiftedMaxPool(2),
                                 mg.Flatten(), mg.Linear(12, 2))
    errors, _, _ = network_gradcheck(make, (2, 2, 6, 6))
    assert errors["x"] > 1e-2 and errors["0.weight"] > 1e-2
    assert errors["4.weight"] < TOL  # layers above the bug are still right
