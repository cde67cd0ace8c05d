"""The fast path (:mod:`minigbp.fast`) against the reference ops (:mod:`minigbp.ops`): 1e-12 in
float64, op by op and through whole networks in all three modes, on drawn shapes."""

import threading
from unittest import mock

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import minigbp as mg
from minigbp import fast, ops
from minigbp.ops.conv import ConvGeometry
from minigbp.ops.pool import max_taps
from torch_helpers import INT_VALUES, NONZERO_INT_VALUES, SPECIAL_VALUES, int_arrays, maxpool_cases, networks

TOL = dict(rtol=1e-12, atol=1e-12)


def close(a, b):
    scale = max(1.0, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(a, b, rtol=TOL["rtol"], atol=TOL["atol"] * scale)


# ------------------------------------------------------------------ convolution

@st.composite
def convs(draw):
    """A valid convolution: N 1-3, C, F 1-6, kernel 1-3, stride 1-2, padding 0-2, dilation 1-2,
    groups 1-2, bias; in half the draws one the fast path turns into a transposed
    convolution (stride 1, one group, F <= C, a kernel of 2-3, padding within the kernel's
    extent). Contents small integers (exact sums) or normal values."""
    if draw(st.booleans()):
        G, S = 1, (1, 1)
        C = draw(st.integers(1, 6))
        F = draw(st.integers(1, C))
        K = (draw(st.integers(2, 3)), draw(st.integers(2, 3)))
        D = draw(st.sampled_from(((1, 1), (1, 1), (2, 1))))
        P = tuple(draw(st.integers(0, min(2, D[a] * (K[a] - 1)))) for a in (0, 1))
    else:
        G = draw(st.sampled_from((1, 1, 1, 2)))
        C, F = G * draw(st.integers(1, 3)), G * draw(st.integers(1, 3))
        K = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        S = draw(st.sampled_from(((1, 1), (2, 2), (1, 2))))
        D = draw(st.sampled_from(((1, 1), (1, 1), (2, 1))))
        P = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    ext = [D[a] * (K[a] - 1) + 1 - 2 * P[a] for a in (0, 1)]
    H, W = (draw(st.integers(max(1, ext[a]), max(1, ext[a]) + 6)) for a in (0, 1))
    N = draw(st.integers(1, 3))
    if draw(st.booleans()):
        x = draw(int_arrays((N, C, H, W), INT_VALUES))
        w = draw(int_arrays((F, C // G) + K, INT_VALUES))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((F, C // G) + K)
    b = np.arange(F, dtype=np.float64) - 1 if draw(st.booleans()) else None
    return x, w, b, S, P, D, G


@st.composite
def blocks(draw, in_shape, w_shape, out_shape):
    """A :data:`fast.BLOCK` for a convolution of input ``in_shape`` and weights ``w_shape`` into
    ``out_shape``: one that splits its columns into rows of one image or into whole images
    (each in a third of the draws where the shapes allow it), or none (one block), or one
    smaller than the weights (both: the reference)."""
    N, C = in_shape[:2]
    HH, WW = w_shape[2:]
    per_image, weights = C * HH * WW * out_shape[2] * out_shape[3], int(np.prod(w_shape))
    ranges = 2 * [(max(per_image, weights), N * per_image - 1)]  # whole images
    ranges += 2 * [(weights, per_image - 1)]  # rows of one image
    ranges += [(N * per_image, N * per_image), (1, weights - 1)]  # one block; smaller than the weights
    low, high = draw(st.sampled_from([r for r in ranges if r[0] <= r[1]]))
    return draw(st.integers(low, high))


def arrangement(g, block):
    """How :func:`fast.conv2d_forward` gathers the columns of convolution ``g`` with this block size."""
    with mock.patch.object(fast, "BLOCK", block):
        shape = fast.block_shape(g)
    if shape is None:
        return "reference"
    return "blocks of rows" if shape[1] < g.Ho else "blocks of whole images"


@given(convs(), st.data())
def test_conv_forward_equals_the_reference(case, data):
    x, w, b, S, P, D, G = case
    x0, w0 = x.copy(), w.copy()
    ref, ref_cache = ops.conv2d_forward(x, w, b, S, P, D, G)
    block = data.draw(blocks(x.shape, w.shape, ref.shape))
    with mock.patch.object(fast, "BLOCK", block):
        out, cache = fast.conv2d_forward(x, w, b, S, P, D, G)
    close(out, ref)
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.flags.c_contiguous
    assert cache[0] is x and cache[1] is w and cache[2] is b and vars(cache[3]) == vars(ref_cache[3])
    for a, a0 in ((x, x0), (w, w0)):  # nothing modified
        np.testing.assert_array_equal(a, a0)
    event(arrangement(ref_cache[3], block))


@pytest.mark.parametrize("block,expected", [
    (50, None),  # the weights (120) are larger than a block: the reference
    (400, (1, 2)),  # 2 of the 5 output rows of one image per block: 2, 2, 1 (24 * 6 columns a row)
    (1500, (2, 5)),  # 2 of the 3 images per block: 2, 1 (720 columns an image)
    (2160, None),  # all the columns in one block: the reference
])
def test_conv_forward_arrangements(block, expected, monkeypatch):
    """Stride, padding and dilation differing between the axes, a bias, blocks that do not
    divide the rows or the images evenly; the reference op is called only where the rule says."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((5, 4, 3, 2)), rng.standard_normal(5)
    args = ((2, 1), (1, 0), (1, 2))
    ref, (_, _, _, g) = ops.conv2d_forward(x, w, b, *args)
    assert ref.shape == (3, 5, 5, 6)
    calls, forward = [], ops.conv2d_forward
    monkeypatch.setattr(ops, "conv2d_forward", lambda *a: calls.append(1) or forward(*a))
    monkeypatch.setattr(fast, "BLOCK", block)
    assert fast.block_shape(g) == expected
    close(fast.conv2d_forward(x, w, b, *args)[0], ref)
    assert calls == ([1] if expected is None else [])


def test_conv_forward_float32_stays_float32_close_to_float64():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 5, 9, 8)), rng.standard_normal((4, 5, 3, 3)), rng.standard_normal(4)
    with mock.patch.object(fast, "BLOCK", 100):  # blocks of rows
        out32 = fast.conv2d_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), 2, 1)[0]
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ops.conv2d_forward(x, w, b, 2, 1)[0], rtol=1e-4, atol=1e-4)


@given(convs(), st.data())
def test_conv_backward_equals_the_reference(case, data):
    x, w, b, S, P, D, G = case
    out, cache = ops.conv2d_forward(x, w, b, S, P, D, G)
    dout = data.draw(int_arrays(out.shape, INT_VALUES))
    flipped = (w.shape[1], w.shape[0]) + w.shape[2:]  # the transposed convolution: dout -> dx
    block = data.draw(blocks(out.shape, flipped, x.shape))
    back = fast.transposed_padding(cache)
    dout0, x0, w0 = dout.copy(), x.copy(), w.copy()
    with mock.patch.object(fast, "BLOCK", block):
        dx = fast.conv2d_backward_data(dout, cache)
    close(dx, ops.conv2d_backward_data(dout, cache))
    assert dx.shape == x.shape and dx.dtype == x.dtype and dx.flags.c_contiguous
    for a, a0 in ((dout, dout0), (x, x0), (w, w0)):  # nothing modified
        np.testing.assert_array_equal(a, a0)
    if back is None:
        event("reference (col2im)")
    else:
        event("transposed convolution, " + arrangement(ConvGeometry(out.shape, flipped, None, 1, back, D, 1), block))


def test_conv_backward_float32_stays_float32_close_to_float64():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 6, 12, 12)), rng.standard_normal((6, 6, 3, 3))
    out64, cache64 = ops.conv2d_forward(x, w, None, 1, 1)
    out32, cache32 = ops.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, 1, 1)
    dx32 = fast.conv2d_backward_data(out32, cache32)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, fast.conv2d_backward_data(out64, cache64), rtol=1e-4, atol=1e-3)


def test_conv_backward_takes_the_transposed_convolution(monkeypatch):
    """At stride 1 with F <= C the reference backward is not called (a spy would raise); with
    F > C, it is."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 10, 10))
    narrow = ops.conv2d_forward(x, rng.standard_normal((4, 8, 3, 3)), None, 1, 1)
    wide = ops.conv2d_forward(x, rng.standard_normal((16, 8, 3, 3)), None, 1, 1)
    calls = []
    backward = ops.conv2d_backward_data
    monkeypatch.setattr(ops, "conv2d_backward_data", lambda *a: calls.append(1) or backward(*a))
    assert fast.conv2d_backward_data(*narrow).shape == x.shape and calls == []
    assert fast.conv2d_backward_data(*wide).shape == x.shape and calls == [1]


def test_reference_block_runs_the_reference(monkeypatch):
    calls = []
    backward = ops.conv2d_backward_data
    monkeypatch.setattr(ops, "conv2d_backward_data", lambda *a: calls.append(1) or backward(*a))
    x, w = np.ones((1, 4, 6, 6)), np.ones((2, 4, 3, 3))
    out, cache = ops.conv2d_forward(x, w, None, 1, 1)
    fast.conv2d_backward_data(out, cache)
    assert calls == []
    with mg.fast.reference():
        fast.conv2d_backward_data(out, cache)
        assert not isinstance(fast.maxpool2d_forward(x, 2)[1], fast.Switches)
        seen_elsewhere = []
        t = threading.Thread(target=lambda: seen_elsewhere.append(fast._REFERENCE.get()))
        t.start()
        t.join()
    assert calls == [1]
    assert seen_elsewhere == [False]  # only the block's own thread
    fast.conv2d_backward_data(out, cache)
    assert calls == [1]


# ------------------------------------------------------------------ max pooling

@given(maxpool_cases(), st.sampled_from(mg.ops.pool.TIES))
def test_maxpool_forward_and_backward_equal_the_reference(c, ties):
    """Every geometry: padding, dilation, overlapping windows, ceil-mode edge windows,
    windows that miss the input; ties, -inf and NaN."""
    x, args = c["x"], (c["kernel"], c["stride"], c["padding"], c["dilation"], c["ceil_mode"])
    x0 = x.copy()
    out, cache = fast.maxpool2d_forward(x, *args)
    ref, ref_cache = ops.maxpool2d_forward(x, *args)
    np.testing.assert_array_equal(out, ref)  # NaN where the reference has NaN
    dout = c["dout"]
    np.testing.assert_array_equal(fast.maxpool2d_backward(dout, cache, ties),
                                  ops.maxpool2d_backward(dout, ref_cache, ties))
    indices, geometry, *_ = cache  # the compact switches read as the reference's cache
    np.testing.assert_array_equal(indices, ref_cache[0])
    assert indices.dtype == np.int64 and geometry.x_shape == x.shape
    np.testing.assert_array_equal(x, x0)
    assert isinstance(cache, fast.Switches)
    g = cache.g
    event("windows inside x, maximum first" if (g.Hb, g.Wb) == x.shape[2:] and not np.isnan(out).any()
          else "tap loop")
    disjoint = g.S[0] >= g.K[0] and g.S[1] >= g.K[1] and g.P == (0, 0) and g.D == (1, 1)
    event("backward: assignment" if disjoint and ties == "first" else "backward: the reference")


@st.composite
def pools_inside(draw):
    """Max pooling whose windows all lie inside the input (no padding, floor mode): kernel 1-3,
    stride 1-4, dilation 1-2 (overlapping, tiling and gapped windows); in half the draws
    disjoint windows (stride >= kernel, no dilation). Contents small integers (ties), with
    -inf and NaN in one draw in three."""
    K = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    disjoint = draw(st.booleans())  # windows that share no input position, in half the draws
    S = tuple(draw(st.integers(K[a] if disjoint else 1, 4)) for a in (0, 1))
    D = (1, 1) if disjoint else draw(st.sampled_from(((1, 1), (2, 1), (1, 2))))
    H, W = (D[a] * (K[a] - 1) + 1 + draw(st.integers(0, 6)) for a in (0, 1))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W)
    x = draw(int_arrays(shape, draw(st.sampled_from((INT_VALUES, INT_VALUES, SPECIAL_VALUES)))))
    return x, K, S, D


@given(pools_inside(), st.data())
def test_maxpool_windows_inside_the_input_equal_the_reference(case, data):
    """The maximum-first forward (the tap loop where a window holds NaN) and, for windows
    that share no input position (stride >= kernel, no dilation), the backward's assignment."""
    x, K, S, D = case
    x0 = x.copy()
    out, cache = fast.maxpool2d_forward(x, K, S, 0, D)
    ref, ref_cache = ops.maxpool2d_forward(x, K, S, 0, D)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(cache[0], ref_cache[0])
    dout = data.draw(int_arrays(out.shape, NONZERO_INT_VALUES))
    dout0 = dout.copy()
    np.testing.assert_array_equal(fast.maxpool2d_backward(dout, cache), ops.maxpool2d_backward(dout, ref_cache))
    np.testing.assert_array_equal(x, x0)  # nothing modified
    np.testing.assert_array_equal(dout, dout0)
    event("NaN: tap loop" if np.isnan(out).any() else "maximum first")
    event("backward: assignment" if S[0] >= K[0] and S[1] >= K[1] and D == (1, 1) else "backward: the reference")


@pytest.mark.parametrize("kernel,stride", [(2, 2), (2, 3), ((3, 2), (3, 4))])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_maxpool_disjoint_windows_with_a_remainder(kernel, stride, ceil_mode, monkeypatch):
    """stride >= kernel with a remainder: floor mode leaves cells no window covers (they get
    0), ceil mode adds edge windows that stick out of the input. No window shares an input
    position, so the backward assigns instead of calling the reference's scatter-add."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 11))
    out, cache = fast.maxpool2d_forward(x, kernel, stride, ceil_mode=ceil_mode)
    ref, ref_cache = ops.maxpool2d_forward(x, kernel, stride, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(out, ref)
    dout = np.arange(out.size, dtype=np.float64).reshape(out.shape) + 1
    want = ops.maxpool2d_backward(dout, ref_cache)
    monkeypatch.setattr(ops, "maxpool2d_backward", None)  # the reference is not called
    np.testing.assert_array_equal(fast.maxpool2d_backward(dout, cache), want)
    assert (want != 0).sum() == out.size  # every window sent its signal to its own position


def test_maxpool_window_with_nan_takes_the_tap_loop(monkeypatch):
    """The maximum-first forward cannot find a NaN's tap (NaN == NaN is false); such inputs go
    to the tap loop, whose rule is the reference's (NaN propagates, the last NaN is the switch)."""
    x = np.array([[[[1.0, np.nan, 3.0, 0.0],
                    [np.nan, 2.0, 4.0, 4.0]]]])
    loops = []
    monkeypatch.setattr(fast, "max_taps", lambda *a: loops.append(1) or max_taps(*a))
    out, cache = fast.maxpool2d_forward(x, 2)
    ref, ref_cache = ops.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(out, [[[[np.nan, 4.0]]]])
    np.testing.assert_array_equal(cache.tap, [[[[2, 2]]]])  # the last NaN; the first of tied maxima
    np.testing.assert_array_equal(cache[0], ref_cache[0])
    assert loops == [1]
    fast.maxpool2d_forward(np.nan_to_num(x), 2)
    assert loops == [1]  # without NaN: the maximum first


def test_maxpool_switches_are_compact_and_first_of_ties():
    x = np.array([[[[1.0, 1.0, 0.0, 2.0],
                    [0.0, 1.0, 2.0, 2.0]]]])
    out, cache = fast.maxpool2d_forward(x, 2)
    assert isinstance(cache, fast.Switches) and cache.tap.dtype == np.int8
    np.testing.assert_array_equal(out, [[[[1.0, 2.0]]]])
    np.testing.assert_array_equal(cache.tap, [[[[0, 1]]]])  # the first maximum, row-major
    dx = fast.maxpool2d_backward(np.array([[[[5.0, 7.0]]]]), cache)
    np.testing.assert_array_equal(dx, [[[[5.0, 0.0, 0.0, 7.0], [0.0, 0.0, 0.0, 0.0]]]])
    split = fast.maxpool2d_backward(np.array([[[[6.0, 9.0]]]]), cache, "split")
    np.testing.assert_array_equal(split, [[[[2.0, 2.0, 0.0, 3.0], [0.0, 2.0, 3.0, 3.0]]]])
    with pytest.raises(ValueError, match="pool_ties"):
        fast.maxpool2d_backward(np.ones((1, 1, 1, 2)), cache, "middle")


def test_maxpool_with_more_taps_than_int8_holds_goes_to_the_reference():
    x = np.random.default_rng(0).standard_normal((1, 2, 12, 12))
    out, cache = fast.maxpool2d_forward(x, 12)  # 144 taps
    assert not isinstance(cache, fast.Switches)
    np.testing.assert_array_equal(out, x.max(axis=(2, 3), keepdims=True))
    np.testing.assert_array_equal(fast.maxpool2d_backward(np.ones((1, 2, 1, 1)), cache),
                                  ops.maxpool2d_backward(np.ones((1, 2, 1, 1)), cache))


# ---------------------------------------------------------------- whole networks

@given(networks(), st.sampled_from(("first", "last", "split")), st.data())
def test_networks_equal_the_reference_in_three_modes(net, ties, data):
    model, x, classes = net
    target = data.draw(st.integers(0, classes - 1))
    for mode in mg.MODES:
        got = mg.backprop(model, x, target, mode, pool_ties=ties)
        with mg.fast.reference():
            want = mg.backprop(model, x, target, mode, pool_ties=ties)
        close(got, want)
    _, dw = model.backward_with_grads(*_seeded(model, x))
    with mg.fast.reference():
        _, dw_ref = model.backward_with_grads(*_seeded(model, x))
    for key in dw_ref:
        close(dw[key], dw_ref[key])


def _seeded(model, x):
    out, tape = model.forward(x)
    return np.ones_like(out), tape


def test_resnet_block_equals_the_reference():
    """Branches that meet (Add) and a strided 3x3 and a 1x1 projection: the ResNet shapes."""
    mg.manual_seed(0)
    model = mg.zoo.resnet18(num_classes=5)
    x = np.random.default_rng(0).standard_normal((1, 3, 40, 40))
    for mode in mg.MODES:
        got = mg.backprop(model, x, 2, mode)
        with mg.fast.reference():
            want = mg.backprop(model, x, 2, mode)
        close(got, want)
