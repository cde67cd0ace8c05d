"""Whole random networks against torch float64: autograd (vanilla) and Captum (guided, deconvnet).

Hypothesis draws (:func:`torch_helpers.networks`) a stack of 2-5 blocks (conv [+ relu]
[+ max/avg pool], every hyperparameter drawn), then adaptive average pooling (sizes that
need not divide the feature map, ``None`` entries), flatten, linear, relu, [dropout],
linear [, softmax]; sometimes as nested ``Sequential``s (``features``/``classifier`` or
positional), sometimes with dropout in the feature stack. ``to_torch`` builds the float64
twin with the same weights.

In "int" draws inputs, weights and biases are small integers drawn by hypothesis and every
divisor (average pooling windows, adaptive bins) is a power of two, so both libraries
compute exactly: ReLUs see exact zeros (``x == 0`` must block) and max pools see ties
(first wins) with no roundoff to hide a disagreement. "cont" draws use normal values.

A map that is all zero cannot tell the modes (or a broken kernel) apart: the strategy is
drawn so that this is rare (``test_strategy_coverage.py`` asserts how rare), and the tests
that compare the three modes check minigbp on the remaining examples too (its maps must be
zero there as well) but then reject them (``assume``), so each of the examples they count
has a non-zero expected map in every mode.

Tolerance: :data:`TOL` relative to the signal scale (max |signal| of both sides).
"""

import numpy as np
import pytest
from hypothesis import assume, event, given, note
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import minigbp as mg  # noqa: E402
from torch_helpers import (autograd_signal, every_relu, int_arrays, networks, relu_rule_backprop,  # noqa: E402
                           rngs, to_torch, truncated)
from torch_helpers import torch_single_thread  # noqa: E402,F401 (autouse fixture)

#: float64, relative to max(max |minigbp|, max |torch|): the same network computed with
#: different summation orders differs by ~1e-15 of the signal scale ("int" draws: exactly
#: 0); a wrong rule (a ReLU mask, a switch, a divisor) is an O(1) relative error.
TOL = 1e-10

#: float32 vs float64 of the same network, relative to max |float64 signal|: float32 keeps
#: ~7 digits; errors accumulated over ~10 layers stay below 1e-5 on these small networks.
TOL_F32 = 1e-4

MODES = mg.MODES
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")
CAPTUM = {"guided": captum_attr.GuidedBackprop, "deconvnet": captum_attr.Deconvolution}



def assert_signal_close(got, want, tol=TOL, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite signal"
    scale = max(float(np.abs(got).max()), float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    note(f"{what}: max |err| {err:.3g}, scale {scale:.3g}")
    assert err <= tol * scale, f"{what}: max abs error {err:.3g} > {tol:g} * {scale:.3g}"


# ------------------------------------------------------------------------------ helpers

def _weights(rng, layer, kind):
    """Float64 parameters: integers in [-2, 2] ("int") or He-scaled normals ("cont")."""
    fan_in = layer.weight[0].size
    if kind == "int":
        layer.weight = rng.integers(-2, 3, layer.weight.shape).astype(np.float64)
        if layer.bias is not None:
            layer.bias = rng.integers(-2, 3, layer.bias.shape).astype(np.float64)
    else:
        layer.weight = rng.standard_normal(layer.weight.shape) * np.sqrt(2.0 / fan_in)
        if layer.bias is not None:
            layer.bias = rng.standard_normal(layer.bias.shape) * 0.1


def torch_vanilla(tmodel, x, seed):
    tx = torch.tensor(x, requires_grad=True)
    tmodel(tx).backward(torch.from_numpy(seed))
    return tx.grad.numpy()


def one_hot(n, classes, target):
    seed = np.zeros((n, classes))
    seed[np.arange(n), target] = 1.0
    return seed


def captum(mode, tmodel, x, target):
    return CAPTUM[mode](tmodel).attribute(torch.tensor(x, requires_grad=True), target=target).detach().numpy()


# ------------------------------------------------------------------------------ tests

@given(networks(), st.data())
def test_three_modes_vs_autograd_and_captum(net, data):
    model, x, classes = net
    t = data.draw(st.integers(0, classes - 1), label="target")
    tmodel = to_torch(model)
    assert list(tmodel.state_dict()) == list(model.state_dict())  # same dotted names, same order
    x0 = x.copy()
    out = model(x)
    assert out.dtype == np.float64
    assert_signal_close(out, tmodel(torch.from_numpy(x)).detach().numpy(), what="logits")
    # the hook oracle first (cheap; checked against autograd and Captum below)
    hooks = {mode: relu_rule_backprop(tmodel, x, one_hot(len(x), classes, t), mode) for mode in MODES}
    informative = all(np.abs(h).max() > 0 for h in hooks.values())
    for mode in MODES:
        got = mg.backprop(model, x, t, mode=mode)
        assert got.shape == x.shape and got.dtype == np.float64
        if not informative:  # rejected below, but minigbp must agree all the same
            assert_signal_close(got, hooks[mode], what=f"{mode} (an all-zero example)")
            continue
        if mode == "vanilla":
            want = torch_vanilla(tmodel, x, one_hot(len(x), classes, t))
            assert_signal_close(hooks[mode], want, what="hook oracle vs autograd (vanilla)")
        else:
            want = captum(mode, tmodel, x, t)
            # the hook oracle used by the seed/layer tests below agrees with Captum
            assert_signal_close(hooks[mode], want, what=f"hook oracle vs Captum ({mode})")
        assert_signal_close(got, want, what=mode)
    np.testing.assert_array_equal(x, x0)  # the input is never modified
    assume(informative)  # an all-zero expected map tells neither the modes nor a broken kernel apart


@given(networks(), st.data())
def test_per_sample_targets(net, data):
    model, x, classes = net
    targets = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=len(x), max_size=len(x)),
                                 label="targets"))
    tmodel = to_torch(model)
    for mode in MODES:
        got = mg.backprop(model, x, targets, mode=mode)
        if mode == "vanilla":
            want = torch_vanilla(tmodel, x, one_hot(len(x), classes, targets))
        else:
            want = captum(mode, tmodel, x, targets.tolist())
        assert_signal_close(got, want, what=mode)
        # sample n's signal is that of its own target alone
        for n, tn in enumerate(targets):
            np.testing.assert_array_equal(got[n], mg.backprop(model, x, int(tn), mode=mode)[n])


#: int seed arrays: -2..2, drawn dense by hypothesis (never all zero, which makes an all-zero
#: map, nor constant)
SEED_VALUES = (1.0, -1.0, 2.0, -2.0, 0.0)


@given(networks(), st.data(), st.sampled_from(["int", "cont"]))
def test_seed_arrays(net, data, seed_kind):
    model, x, classes = net
    shape = (len(x), classes)
    seed = (data.draw(int_arrays(shape, SEED_VALUES, sparse=False), label="seed") if seed_kind == "int"
            else data.draw(rngs(), label="seed rng").standard_normal(shape))
    seed0 = seed.copy()
    tmodel = to_torch(model)
    informative = True
    for mode in MODES:
        want = (torch_vanilla(tmodel, x, seed) if mode == "vanilla"
                else relu_rule_backprop(tmodel, x, seed, mode))
        informative &= bool(np.abs(want).max() > 0)
        got = mg.backprop(model, x, seed, mode=mode)
        assert_signal_close(got, want, what=mode)
    np.testing.assert_array_equal(seed, seed0)  # the caller's seed is never touched
    assume(informative)  # an all-zero expected map tells neither the modes nor a broken kernel apart


#: a map through the softmax is zero up to roundoff below this (absolute; the seed is 1): its seed
#: at the logits sums to zero, so a map that is zero in exact arithmetic (e.g. every class weighting
#: a hidden unit alike) comes out as ~1e-17 noise on both sides, which no relative tolerance can
#: compare; the strategy keeps the logits' spread <= 4, so real signals are many orders larger
SOFTMAX_ZERO = 1e-9


@given(networks(softmax=True), st.data())
def test_softmax_network_three_modes_vs_autograd(net, data):
    """A network ending in ``Softmax(dim=1)``, the seed a one-hot at a class of its output (the
    probability, not the logit): the softmax's Jacobian turns it into a signed signal at the
    logits, the same in every mode. Oracles: torch autograd for vanilla, and the guided and
    deconvnet rules written as autograd ReLUs (:func:`torch_helpers.every_relu`) otherwise."""
    model, x, classes = net
    t = data.draw(st.integers(0, classes - 1), label="target")
    tmodel = to_torch(model)
    assert isinstance(tmodel[-1] if not hasattr(tmodel, "classifier") else tmodel.classifier[-1],
                      torch.nn.Softmax)
    assert list(tmodel.state_dict()) == list(model.state_dict())
    out = model(x)
    assert_signal_close(out, tmodel(torch.from_numpy(x)).detach().numpy(), what="probabilities")
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    seed = one_hot(len(x), classes, t)
    informative = True
    for mode in MODES:
        if mode == "vanilla":
            want = autograd_signal(tmodel, x, seed)
        else:
            with every_relu(mode):
                want = autograd_signal(tmodel, x, seed)
        got = mg.backprop(model, x, t, mode=mode)
        assert got.shape == x.shape and got.dtype == np.float64
        if np.abs(want).max() <= SOFTMAX_ZERO:  # zero up to roundoff: so must minigbp's be
            informative = False
            assert np.abs(got).max() <= SOFTMAX_ZERO, f"{mode}: {np.abs(got).max():.3g} where torch has 0"
            continue
        assert_signal_close(got, want, what=f"{mode} through the softmax")
    assume(informative)  # an all-zero expected map tells neither the modes nor a broken kernel apart


@given(networks(), st.data())
def test_start_from_intermediate_layer(net, data):
    model, x, _ = net
    names = [name for name, _ in model.named_modules()]
    layer = data.draw(st.sampled_from(names), label="layer")
    tmodel = truncated(to_torch(model), layer)
    out = model.forward(x, upto=layer)[0]
    t_out = tmodel(torch.from_numpy(x)).detach().numpy()
    assert_signal_close(out, t_out, what="truncated forward")
    use_seed = data.draw(st.booleans(), label="seed array")
    if use_seed:
        target = data.draw(rngs()).standard_normal(out.shape)
        seed = target
    else:  # int target: a 1 at every position of channel t (the channel's sum)
        t = data.draw(st.integers(0, out.shape[1] - 1), label="target")
        target = t
        seed = np.zeros_like(out)
        seed[:, t] = 1.0
    event(f"start at a {out.ndim}-D output, {'seed array' if use_seed else 'int target'}")
    for mode in MODES:
        got = mg.backprop(model, x, target, mode=mode, layer=layer)
        want = relu_rule_backprop(tmodel, x, seed, mode)  # vanilla: plain autograd
        assert got.shape == x.shape
        assert_signal_close(got, want, what=f"{mode} from {layer!r}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_stays_float32_and_matches_float64(seed):
    model, x64, classes = _fixed_network(seed)
    x32 = x64.astype(np.float32)
    out32 = model(x32)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, model(x64), rtol=0, atol=TOL_F32 * np.abs(model(x64)).max())
    for mode in MODES:
        g32 = mg.backprop(model, x32, 1 % classes, mode=mode)
        g64 = mg.backprop(model, x64, 1 % classes, mode=mode)
        assert g32.dtype == np.float32 and g64.dtype == np.float64
        scale = float(np.abs(g64).max())
        assert scale > 0
        err = float(np.abs(g32.astype(np.float64) - g64).max())
        assert err <= TOL_F32 * scale, f"{mode}: float32 differs by {err:.3g} (scale {scale:.3g})"
    # parameters are float64; they are cast per call, never changed
    assert all(p.dtype == np.float64 for p in model.state_dict().values())


def _fixed_network(seed):
    """A fixed VGG-like float64 network (conv/relu/maxpool, avgpool, adaptive pool, MLP)."""
    rng = np.random.default_rng(seed)
    model = mg.Sequential(
        features=mg.Sequential(
            mg.Conv2d(3, 6, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
            mg.Conv2d(6, 8, 3, padding=1), mg.ReLU(), mg.MaxPool2d(3, 2, 1, ceil_mode=True),
            mg.Conv2d(8, 8, 3, padding=1, groups=2), mg.ReLU(), mg.AvgPool2d(2, ceil_mode=True),
        ),
        avgpool=mg.AdaptiveAvgPool2d((3, 2)),
        classifier=mg.Sequential(mg.Flatten(), mg.Linear(48, 16), mg.ReLU(), mg.Dropout(),
                                 mg.Linear(16, 4)),
    )
    for _, layer in model.named_leaves():
        if layer.param_names:
            _weights(rng, layer, "cont")
    return model, rng.standard_normal((2, 3, 17, 15)), 4
