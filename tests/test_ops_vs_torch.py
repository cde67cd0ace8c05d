"""Every minigbp layer against torch float64 autograd (DESIGN.md, oracle 2).

For each layer hypothesis draws shapes and hyperparameters (ints and pairs, strides,
paddings, dilations, groups, ceil_mode, count_include_pad, bias on/off) and contents
(small integers: ties in pooling windows and exact zeros at ReLUs; normal values; for
max pooling also -inf and NaN). Pooling configurations are built valid, so that padding,
overlapping windows, ceil-mode edge windows, divisors that ``count_include_pad`` changes
and (with hypothesis-drawn integer contents) ties that change the route are frequent
(``test_strategy_coverage.py`` asserts how frequent); broken ones are drawn on their own.
Then:

* paired errors: torch rejects the configuration  <=>  minigbp raises ``ValueError``
  (constructor or forward; tinygrad's convention). Nothing is ``assume``d away;
* forward output, signal at the input and parameter gradients equal torch's within
  :data:`TOL`; max-pooling switches equal torch's ``return_indices``;
* non-ReLU layers send the same signal in every mode; ReLU follows torch autograd in
  vanilla mode and Captum's hook rules (``relu_rule_backprop``) in deconvnet/guided;
* backward never writes into ``dout`` or the input.

Named tests pin the hard cases: tied maxima, NaN, all -inf windows, ceil-mode edge
windows, overlapping windows, average-pool divisors in ceil mode.
"""

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import minigbp as mg  # noqa: E402
from torch_helpers import (adaptive_cases, assert_close, avgpool_cases, broken_pool_cases,  # noqa: E402
                           conv_cases, empty_window_mask, fill, maxpool_cases,
                           relu_cases, relu_rule_backprop, rngs, softmax_cases, to_torch)
from torch_helpers import torch_single_thread  # noqa: E402,F401 (autouse fixture)

#: float64 tolerance, relative to max(1, max |reference|). Both sides compute the same
#: sums in different orders (im2col + BLAS vs torch's kernels); observed differences are
#: ~1e-15 relative. 1e-10 leaves five orders of margin for roundoff yet catches any wrong
#: tap, divisor or route, which is an O(1) error.
TOL = 1e-10

MODES = mg.MODES
# torch warns when a drawn zero-size kernel makes an empty weight (the config is rejected later)
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")


# ------------------------------------------------------------------------------ helpers

def outcome(fn):
    """``(result, None)`` or ``(None, exception)``."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - any torch error counts as "rejects"
        return None, e


def check_paired(torch_err, mg_err, what):
    """torch rejects <=> minigbp raises ValueError."""
    note(f"torch: {torch_err!r}; minigbp: {mg_err!r}")
    event("torch rejects" if torch_err is not None else "torch accepts")
    if torch_err is not None:
        assert mg_err is not None, f"torch rejects {what} ({torch_err}) but minigbp accepts it"
    if mg_err is not None:
        assert isinstance(mg_err, ValueError), f"minigbp raised {mg_err!r} for {what}, expected ValueError"
        assert torch_err is not None, f"minigbp rejects {what} ({mg_err}) but torch accepts it"
    return torch_err is None


def mg_run(make, x):
    """Construct a minigbp layer and run it forward: ``((layer, out, cache), None)`` or ``(None, error)``."""
    def go():
        layer = make()
        out, cache = layer.forward(x)
        return layer, out, cache
    return outcome(go)


def torch_run(make, x):
    """Construct a torch module and run it forward on ``x``: ``(out, None)`` or ``(None, error)``."""
    return outcome(lambda: make()(torch.from_numpy(x)))


def torch_grads(tmodule, x, dout):
    """torch float64 autograd: output, input gradient and parameter gradients (numpy)."""
    tx = torch.tensor(x, requires_grad=True)
    out = tmodule(tx)
    out.backward(torch.from_numpy(dout))
    params = {n: p.grad.numpy() for n, p in tmodule.named_parameters()}
    return out.detach().numpy(), tx.grad.numpy(), params


def check_layer_vs_torch(layer, out, cache, x, rng, kind, dout_kind=None, dout=None):
    """Compare one constructed layer (forward already run) with its torch twin, every mode;
    the backward seed is ``dout`` if given, else drawn from ``rng``."""
    tmod = to_torch(layer)
    if dout is None:
        dout = fill(rng, out.shape, dout_kind or kind)
    x0, dout0 = x.copy(), dout.copy()
    dx = layer.backward(dout, cache, "vanilla")
    grads = layer.param_grads(dout, cache)
    t_out, t_dx, t_grads = torch_grads(tmod, x, dout)
    assert out.dtype == np.float64 and dx.dtype == np.float64
    assert_close(out, t_out, TOL, what="forward")
    assert_close(dx, t_dx, TOL, what="input gradient")
    assert set(grads) == set(t_grads), (grads.keys(), t_grads.keys())
    for name, g in grads.items():
        assert g.dtype == np.float64
        assert_close(g, t_grads[name], TOL, what=f"{name} gradient")
    if not isinstance(layer, mg.ReLU):
        for mode in MODES:  # only ReLU depends on the mode
            np.testing.assert_array_equal(layer.backward(dout, cache, mode), dx)
    np.testing.assert_array_equal(x, x0)  # backward never writes into its inputs
    np.testing.assert_array_equal(dout, dout0)
    return dout, dx


@given(conv_cases())
def test_conv2d_vs_torch(c):
    x = fill(c["rng"], (c["N"], c["xc"], c["H"], c["W"]), c["kind"])
    args = (c["cin"], c["cout"], c["kernel"])
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"],
              bias=c["bias"])
    _, t_err = torch_run(lambda: torch.nn.Conv2d(*args, **kw, dtype=torch.float64), x)

    def make():
        layer = mg.Conv2d(*args, **kw)
        layer.weight = fill(c["rng"], layer.weight.shape, c["kind"])
        if c["bias"]:
            layer.bias = fill(c["rng"], layer.bias.shape, c["kind"])
        return layer

    res, m_err = mg_run(make, x)
    if check_paired(t_err, m_err, f"Conv2d{args} {kw} on {x.shape}"):
        check_layer_vs_torch(*res, x, c["rng"], c["kind"])


@pytest.mark.parametrize("kernel,dilation", [(3, 1), ((1, 3), 1), (3, 2), ((3, 5), (2, 1))])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv2d_string_padding_vs_torch(kernel, dilation, padding):
    rng = np.random.default_rng(0)
    layer = mg.Conv2d(2, 3, kernel, padding=padding, dilation=dilation)
    x = rng.standard_normal((2, 2, 7, 8))
    out, cache = layer.forward(x)
    tmod = torch.nn.Conv2d(2, 3, kernel, padding=padding, dilation=dilation, dtype=torch.float64)
    tmod.weight.data = torch.from_numpy(layer.weight.astype(np.float64))
    tmod.bias.data = torch.from_numpy(layer.bias.astype(np.float64))
    dout = rng.standard_normal(out.shape)
    t_out, t_dx, t_grads = torch_grads(tmod, x, dout)
    assert_close(out, t_out, TOL, what="forward")
    assert_close(layer.backward(dout, cache), t_dx, TOL, what="input gradient")
    assert_close(layer.param_grads(dout, cache)["weight"], t_grads["weight"], TOL, what="weight gradient")


@pytest.mark.parametrize("forward", ["conv2d_forward", "conv2d_forward_naive"])
@pytest.mark.parametrize("w_shape", [(1, 1, 0, 0), (1, 1, 2, 0)])
def test_functional_conv2d_rejects_empty_kernel(forward, w_shape):
    """torch rejects a zero-size kernel ("kernel size should be greater than zero"); the
    layer rejects it at construction, and the functional ops must reject it too instead of
    returning an output larger than the input."""
    from minigbp import ops
    x, w = np.ones((1, 1, 3, 3)), np.ones(w_shape)
    with pytest.raises(RuntimeError):
        torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w))
    with pytest.raises(ValueError):
        getattr(ops, forward)(x, w)


# ------------------------------------------------------------------------- MaxPool2d

def _reject_paired(c, make_torch, make_mg, what):
    """A broken configuration: torch and minigbp (``ValueError``) both reject it."""
    x = c["x"]
    _, t_err = torch_run(make_torch, x)
    _, m_err = mg_run(make_mg, x)
    assert not check_paired(t_err, m_err, f"{what} on {x.shape}"), f"torch accepts {what} ({c['broken']})"


@given(maxpool_cases())
def test_maxpool2d_vs_torch(c):
    x = c["x"]
    args = (c["kernel"], c["stride"], c["padding"], c["dilation"])
    t_res, t_err = torch_run(
        lambda: torch.nn.MaxPool2d(*args, return_indices=True, ceil_mode=c["ceil_mode"]), x)
    res, m_err = mg_run(lambda: mg.MaxPool2d(*args, ceil_mode=c["ceil_mode"]), x)
    if not check_paired(t_err, m_err, f"MaxPool2d{args} ceil_mode={c['ceil_mode']} on {x.shape}"):
        return
    layer, out, cache = res
    indices, geometry = cache[:2]
    t_out, t_idx = (t.numpy() for t in t_res)
    assert_close(out, t_out, TOL, what="forward")
    assert indices.shape == t_idx.shape
    # windows whose taps all miss the input (possible with dilation): torch records an
    # out-of-range index there and its backward writes out of bounds, so only the forward
    # value (-inf) is compared with torch for them
    empty = np.broadcast_to(empty_window_mask(x.shape, out.shape[2:], *args), out.shape)
    assert np.all(t_out[empty] == -np.inf) and np.all(out[empty] == -np.inf)
    np.testing.assert_array_equal(indices[~empty], t_idx[~empty])
    if empty.any():
        event("windows entirely outside the input")
    assert layer.param_grads(out, cache) == {}

    assert out.shape[2:] == c["out_hw"]  # the strategy's (torch's) size formula
    dout = c["dout"]
    dout0 = dout.copy()
    dx = layer.backward(dout, cache)
    if not empty.any():
        tx = torch.tensor(x, requires_grad=True)
        t_out2, _ = torch.nn.functional.max_pool2d(tx, *args, ceil_mode=c["ceil_mode"], return_indices=True)
        t_out2.backward(torch.from_numpy(dout))
        want = tx.grad.numpy()
    else:  # torch's own rule (scatter-add at its indices) over the non-empty windows
        N, C, H, W = x.shape
        idx = torch.from_numpy(np.where(empty, 0, t_idx).reshape(N, C, -1))
        src = torch.from_numpy(np.where(empty, 0.0, dout).reshape(N, C, -1))
        want = torch.zeros(N, C, H * W, dtype=torch.float64).scatter_add_(2, idx, src).reshape(x.shape).numpy()
    assert_close(dx, want, TOL, what="input gradient")
    for mode in MODES:
        np.testing.assert_array_equal(layer.backward(dout, cache, mode), dx)
    np.testing.assert_array_equal(dout, dout0)


@given(st.one_of(broken_pool_cases(dilated=True), broken_pool_cases(dilated=False)))
def test_pooling_rejects_what_torch_rejects(c):
    """Max (``dilated``) and average pooling with one broken hyperparameter or too small an input."""
    if c["dilated"]:
        args = (c["kernel"], c["stride"], c["padding"], c["dilation"])
        _reject_paired(c, lambda: torch.nn.MaxPool2d(*args, ceil_mode=c["ceil_mode"]),
                       lambda: mg.MaxPool2d(*args, ceil_mode=c["ceil_mode"]),
                       f"MaxPool2d{args} ceil_mode={c['ceil_mode']}")
    else:
        args = (c["kernel"], c["stride"], c["padding"])
        kw = dict(ceil_mode=c["ceil_mode"], count_include_pad=c["count_include_pad"])
        _reject_paired(c, lambda: torch.nn.AvgPool2d(*args, **kw), lambda: mg.AvgPool2d(*args, **kw),
                       f"AvgPool2d{args} {kw}")


def _maxpool_both(x, *args, **kw):
    """minigbp and torch max pooling of ``x`` with a backward of ones (and the seed used)."""
    x = np.asarray(x, dtype=np.float64)
    layer = mg.MaxPool2d(*args, **kw)
    out, cache = layer.forward(x)
    dout = np.ones_like(out)
    dx = layer.backward(dout, cache)
    tx = torch.tensor(x, requires_grad=True)
    t_out, t_idx = torch.nn.functional.max_pool2d(tx, *args, return_indices=True, **kw)
    t_out.backward(torch.from_numpy(dout))
    return (out, cache[0], dx), (t_out.detach().numpy(), t_idx.numpy(), tx.grad.numpy())


def _assert_same(m, t):
    for a, b, what in zip(m, t, ("output", "indices", "input gradient")):
        assert_close(a, b, TOL, what=what)


def test_maxpool_tie_first_in_row_major_order_wins():
    x = [[[[1.0, 3.0], [3.0, 2.0]]]]
    m, t = _maxpool_both(x, 2)
    _assert_same(m, t)
    assert m[1].item() == 1  # (0, 1), not (1, 0)
    np.testing.assert_array_equal(m[2], [[[[0, 1], [0, 0]]]])


def test_maxpool_tie_all_equal_picks_first_tap_and_padding_never_wins():
    # all zeros, padding 1: padding acts as -inf, the first tap *inside* the input wins
    x = np.zeros((1, 1, 3, 3))
    m, t = _maxpool_both(x, 3, 2, 1)
    _assert_same(m, t)
    np.testing.assert_array_equal(m[0], 0.0)
    np.testing.assert_array_equal(m[1], [[[[0, 1], [3, 4]]]])


def test_maxpool_nan_propagates_last_nan_wins():
    x = [[[[np.nan, 5.0], [np.nan, 1.0]]]]
    m, t = _maxpool_both(x, 2)
    _assert_same(m, t)
    assert np.isnan(m[0]).all()
    assert m[1].item() == 2 == t[1].item()  # torch routes to the LAST NaN in the window
    np.testing.assert_array_equal(m[2], [[[[0, 0], [1, 0]]]])


def test_maxpool_nan_beats_inf_and_later_values():
    x = [[[[np.inf, np.nan, 7.0, np.inf]]]]
    m, t = _maxpool_both(x, (1, 4))
    _assert_same(m, t)
    assert m[1].item() == 1


def test_maxpool_all_minus_inf_windows_with_padding():
    x = np.full((1, 2, 3, 3), -np.inf)
    m, t = _maxpool_both(x, 2, 2, 1)  # windows of 1, 2 and 4 taps inside the input
    _assert_same(m, t)
    assert np.all(m[0] == -np.inf)
    # the signal goes to the first tap inside the input of every window
    np.testing.assert_array_equal(m[1][0, 0], [[0, 1], [3, 4]])
    np.testing.assert_array_equal(m[2][0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_maxpool_negative_input_padding_is_not_zero():
    x = -1.0 - np.arange(9.0).reshape(1, 1, 3, 3)  # all negative: zero padding would win
    m, t = _maxpool_both(x, 3, 1, 1)
    _assert_same(m, t)
    assert np.all(m[0] < 0)
    assert m[0][0, 0, 0, 0] == -1.0


def test_maxpool_ceil_mode_keeps_window_that_starts_inside_the_input():
    # H=4, kernel 3, stride 2, padding 1, ceil: windows start at padded rows 0, 2, 4. The
    # last starts at input row 3 and runs past the padding (input rows 3, 4=pad, 5=beyond).
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    m, t = _maxpool_both(x, 3, 2, 1, ceil_mode=True)
    _assert_same(m, t)
    assert m[0].shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(m[0][0, 0, 2], [13, 15, 15])
    # floor mode has one window less
    assert mg.MaxPool2d(3, 2, 1)(x).shape == (1, 1, 2, 2)


def test_maxpool_ceil_mode_drops_window_that_would_start_in_padding():
    # H=2, kernel 2, stride 3, padding 1: ceil((2+2-2)/3)+1 = 2 windows, but the second
    # would start at padded position 3 = H + P (in the right padding), so it is dropped
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    m, t = _maxpool_both(x, 2, 3, 1, ceil_mode=True)
    _assert_same(m, t)
    assert m[0].shape == t[0].shape == (1, 1, 1, 1)
    assert m[0].item() == 1.0


def test_maxpool_ceil_mode_last_window_without_padding():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    m, t = _maxpool_both(x, 2, 2, ceil_mode=True)  # rows 0-1, 2-3, 4 (edge window)
    _assert_same(m, t)
    np.testing.assert_array_equal(m[0][0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])


def test_maxpool_overlapping_windows_accumulate():
    # stride 1 < kernel 2: the centre is the maximum of all four windows of a 3x3 input
    x = -np.ones((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    m, t = _maxpool_both(x, 2, 1)
    _assert_same(m, t)
    np.testing.assert_array_equal(m[2][0, 0], [[0, 0, 0], [0, 4, 0], [0, 0, 0]])
    # with a non-uniform seed the routed values add up
    layer = mg.MaxPool2d(2, 1)
    out, cache = layer.forward(x)
    dout = np.arange(1.0, 5.0).reshape(out.shape)
    assert layer.backward(dout, cache)[0, 0, 1, 1] == 1 + 2 + 3 + 4


def test_maxpool_dilated_overlapping_vs_torch():
    x = np.random.default_rng(1).integers(-2, 3, (2, 2, 7, 6)).astype(np.float64)  # many ties
    m, t = _maxpool_both(x, (3, 2), (1, 2), (1, 1), (2, 3), ceil_mode=True)
    _assert_same(m, t)


# Dilation can make a window whose every tap misses the input. torch accepts these
# configurations: its forward gives -inf, its index is out of range and its backward writes
# out of bounds (so torch's backward is never called on them here).
OUTSIDE_WINDOWS = {
    # H=W=1, kernel 2, dilation 2, padding 1: the only window's taps are at -1 and +1
    "1x1-k2-d2-p1": (np.full((1, 1, 1, 1), 3.0), (2, 1, 1, 2), {}),
    # H=W=2, kernel 2, stride 2, dilation 3, padding 1, ceil: taps at -1 and +2
    "2x2-k2-s2-d3-p1-ceil": (np.arange(1.0, 5.0).reshape(1, 1, 2, 2), (2, 2, 1, 3), {"ceil_mode": True}),
}


@pytest.mark.parametrize("case", sorted(OUTSIDE_WINDOWS))
@pytest.mark.parametrize("forward", ["maxpool2d_forward", "maxpool2d_forward_naive"])
@pytest.mark.parametrize("backward", ["maxpool2d_backward", "maxpool2d_backward_naive"])
def test_maxpool_window_entirely_outside_the_input(case, forward, backward):
    """The output of such a window is -inf (as in torch), no input cell may be recorded as
    its switch, and no signal may reach the input; naive and vectorized alike."""
    from minigbp import ops
    x, args, kw = OUTSIDE_WINDOWS[case]
    t_out = torch.nn.functional.max_pool2d(torch.from_numpy(x), *args, **kw)
    assert t_out.shape == (1, 1, 1, 1) and t_out.item() == -np.inf
    assert mg.MaxPool2d(*args, **kw)(x).shape == (1, 1, 1, 1)  # accepted, like torch
    out, cache = getattr(ops, forward)(x, *args, **kw)
    assert out.shape == (1, 1, 1, 1) and out.item() == -np.inf
    index = cache[0].item()
    assert not 0 <= index < x.size, f"index {index} names an input cell"
    dx = getattr(ops, backward)(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx, np.zeros_like(x))


# ------------------------------------------------------------------------- AvgPool2d

@given(avgpool_cases())
def test_avgpool2d_vs_torch(c):
    x = c["x"]
    args = (c["kernel"], c["stride"], c["padding"])
    kw = dict(ceil_mode=c["ceil_mode"], count_include_pad=c["count_include_pad"])
    _, t_err = torch_run(lambda: torch.nn.AvgPool2d(*args, **kw), x)
    res, m_err = mg_run(lambda: mg.AvgPool2d(*args, **kw), x)
    if check_paired(t_err, m_err, f"AvgPool2d{args} {kw} on {x.shape}"):
        assert res[1].shape[2:] == c["out_hw"]  # the strategy's (torch's) size formula
        check_layer_vs_torch(*res, x, c["rng"], c["kind"], dout=c["dout"])


@pytest.mark.parametrize("count_include_pad,expected", [(True, [1.0, 3.0, 2.0]), (False, [1.5, 3.0, 4.0])])
def test_avgpool_ceil_mode_divisor(count_include_pad, expected):
    """H=4, kernel 3, stride 2, padding 1, ceil: windows cover input rows [-1, 2), [1, 4),
    [3, 6). The divisor is the window clipped to [-P, H + P) = [-1, 5): 3, 3, 2 with
    count_include_pad, and the part inside the input, 2, 3, 1, without."""
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4, 1)
    layer = mg.AvgPool2d((3, 1), (2, 1), (1, 0), ceil_mode=True, count_include_pad=count_include_pad)
    out, cache = layer.forward(x)
    np.testing.assert_allclose(out.ravel(), expected, rtol=0, atol=1e-15)
    dout = np.ones_like(out)
    dx = layer.backward(dout, cache)
    divisors = [3, 3, 2] if count_include_pad else [2, 3, 1]
    want = np.zeros(4)
    for (r0, r1), d in zip([(0, 2), (1, 4), (3, 4)], divisors):
        want[r0:r1] += 1.0 / d
    np.testing.assert_allclose(dx.ravel(), want, rtol=0, atol=1e-15)
    t_out, t_dx, _ = torch_grads(to_torch(layer), x, dout)
    assert_close(out, t_out, TOL, what="forward")
    assert_close(dx, t_dx, TOL, what="input gradient")


def test_avgpool_ceil_mode_edge_window_2d_vs_torch():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 6))
    for cip in (True, False):
        layer = mg.AvgPool2d((3, 2), (2, 3), (1, 1), ceil_mode=True, count_include_pad=cip)
        out, cache = layer.forward(x)
        check_layer_vs_torch(layer, out, cache, x, rng, "cont")


def test_avgpool_overlapping_windows_accumulate():
    layer = mg.AvgPool2d(2, 1)
    x = np.zeros((1, 1, 3, 3))
    out, cache = layer.forward(x)
    dx = layer.backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    t_out, t_dx, _ = torch_grads(to_torch(layer), x, np.ones_like(out))
    assert_close(dx, t_dx, TOL, what="input gradient")


# ----------------------------------------------------------------- AdaptiveAvgPool2d

@given(adaptive_cases())
def test_adaptive_avgpool2d_vs_torch(c):
    x = fill(c["rng"], (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    _, t_err = torch_run(lambda: torch.nn.AdaptiveAvgPool2d(c["output_size"]), x)
    res, m_err = mg_run(lambda: mg.AdaptiveAvgPool2d(c["output_size"]), x)
    if check_paired(t_err, m_err, f"AdaptiveAvgPool2d({c['output_size']}) on {x.shape}"):
        check_layer_vs_torch(*res, x, c["rng"], c["kind"])


@pytest.mark.parametrize("H,Ho,bins", [(5, 3, [(0, 2), (1, 4), (3, 5)]), (7, 3, [(0, 3), (2, 5), (4, 7)]),
                                       (2, 3, [(0, 1), (0, 2), (1, 2)])])
def test_adaptive_avgpool_non_dividing_bins_overlap(H, Ho, bins):
    x = np.arange(1.0, H + 1).reshape(1, 1, 1, H)
    layer = mg.AdaptiveAvgPool2d((None, Ho))
    out, cache = layer.forward(x)
    assert out.shape == (1, 1, 1, Ho)
    np.testing.assert_allclose(out.ravel(), [x[0, 0, 0, a:b].mean() for a, b in bins], rtol=0, atol=1e-15)
    check_layer_vs_torch(layer, out, cache, x, np.random.default_rng(3), "cont")


# ---------------------------------------------------------------------------- Linear

@st.composite
def linear_cases(draw):
    fin = draw(st.integers(1, 6))
    return dict(
        N=draw(st.integers(1, 3)), fin=fin, fout=draw(st.integers(1, 5)), bias=draw(st.booleans()),
        xf=fin + draw(st.sampled_from((0,) * 5 + (1, -1))) if fin > 1 else fin,
        kind=draw(st.sampled_from(("int", "cont"))), rng=draw(rngs()),
    )


@given(linear_cases())
def test_linear_vs_torch(c):
    x = fill(c["rng"], (c["N"], c["xf"]), c["kind"])
    _, t_err = torch_run(lambda: torch.nn.Linear(c["fin"], c["fout"], c["bias"], dtype=torch.float64), x)

    def make():
        layer = mg.Linear(c["fin"], c["fout"], c["bias"])
        layer.weight = fill(c["rng"], layer.weight.shape, c["kind"])
        if c["bias"]:
            layer.bias = fill(c["rng"], layer.bias.shape, c["kind"])
        return layer

    res, m_err = mg_run(make, x)
    if check_paired(t_err, m_err, f"Linear({c['fin']}, {c['fout']}) on {x.shape}"):
        check_layer_vs_torch(*res, x, c["rng"], c["kind"])


# --------------------------------------------------------------------------- Flatten

@st.composite
def flatten_cases(draw):
    ndim = draw(st.integers(2, 4))
    return dict(
        shape=tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))),
        start=draw(st.integers(-ndim - 1, ndim)), end=draw(st.integers(-ndim - 1, ndim)), rng=draw(rngs()),
    )


@given(flatten_cases())
def test_flatten_vs_torch(c):
    x = fill(c["rng"], c["shape"], "cont")
    _, t_err = torch_run(lambda: torch.nn.Flatten(c["start"], c["end"]), x)
    res, m_err = mg_run(lambda: mg.Flatten(c["start"], c["end"]), x)
    if check_paired(t_err, m_err, f"Flatten({c['start']}, {c['end']}) on {x.shape}"):
        check_layer_vs_torch(*res, x, c["rng"], "cont")


# ------------------------------------------------------------------------------ ReLU

@given(relu_cases())
def test_relu_vanilla_vs_torch_autograd(c):
    x = c["x"]
    layer = mg.ReLU()
    out, cache = layer.forward(x)
    dout, dx = check_layer_vs_torch(layer, out, cache, x, c["rng"], c["kind"], dout=c["dout"])
    assert np.all(dx[x == 0] == 0)  # the gradient at exactly x == 0 is 0


@given(relu_cases())
def test_relu_deconvnet_guided_vs_captum_rules(c):
    x, dout = c["x"], c["dout"]
    layer = mg.ReLU()
    out, cache = layer.forward(x)
    tmod = torch.nn.Sequential(torch.nn.ReLU())
    for mode in MODES:
        got = layer.backward(dout, cache, mode)
        want = relu_rule_backprop(tmod, x, dout, mode)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want, err_msg=mode)  # elementwise: exact


def test_relu_rules_at_exact_zeros():
    x = np.array([-1.0, 0.0, 2.0, 0.0, 3.0, -2.0])
    r = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    want = {"vanilla": [0, 0, 1, 0, -1, 0], "deconvnet": [1, 1, 1, 0, 0, 0], "guided": [0, 0, 1, 0, 0, 0]}
    layer = mg.ReLU()
    _, cache = layer.forward(x)
    tmod = torch.nn.Sequential(torch.nn.ReLU())
    for mode in MODES:
        got = layer.backward(r, cache, mode)
        np.testing.assert_array_equal(got, want[mode], err_msg=mode)
        np.testing.assert_array_equal(relu_rule_backprop(tmod, x, r, mode), want[mode], err_msg=mode)


# --------------------------------------------------------------------------- Softmax

@given(softmax_cases())
def test_softmax_vs_torch(c):
    """Forward and backward (``s * (dout - <dout, s>)`` along ``dim``, the same in every mode)
    against torch autograd."""
    x = c["x"]
    _, t_err = torch_run(lambda: torch.nn.Softmax(dim=c["dim"]), x)
    res, m_err = mg_run(lambda: mg.Softmax(c["dim"]), x)
    if check_paired(t_err, m_err, f"Softmax({c['dim']}) on {x.shape}"):
        out = res[1]
        np.testing.assert_allclose(out.sum(axis=c["dim"]), 1.0, rtol=0, atol=1e-12)
        check_layer_vs_torch(*res, x, c["rng"], c["kind"], dout=c["dout"])


# ------------------------------------------------------------- documented divergences

@pytest.mark.parametrize("make,shape", [
    (lambda: mg.MaxPool2d(2), (2, 4, 4)),  # torch accepts unbatched (C, H, W); minigbp is NCHW only
    (lambda: mg.AvgPool2d(2), (2, 4, 4)),
    (lambda: mg.Conv2d(2, 2, 2, padding="same"), (1, 2, 4, 4)),  # torch pads asymmetrically
    (lambda: mg.AdaptiveAvgPool2d(0), (1, 2, 4, 4)),  # torch returns an empty tensor
    (lambda: mg.Linear(4, 3), (2, 2, 4)),  # torch broadcasts leading dims
])
def test_documented_divergences_raise_value_error(make, shape):
    """Inputs torch accepts but minigbp deliberately does not: a clear ValueError, never a
    silently different result."""
    with pytest.raises(ValueError):
        make().forward(np.zeros(shape))
