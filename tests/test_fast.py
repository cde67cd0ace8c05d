"""The fast path (:mod:`minigbp.fast`) against the reference ops (:mod:`minigbp.ops`): 1e-12 in
float64, op by op and through whole networks in all three modes, on drawn shapes; with the
work split over three threads even for tiny arrays, so every block boundary is exercised."""

import multiprocessing
import threading

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import minigbp as mg
from minigbp import fast, ops
from torch_helpers import INT_VALUES, SPECIAL_VALUES, int_arrays, networks

TOL = dict(rtol=1e-12, atol=1e-12)


@pytest.fixture(autouse=True)
def split_everything(monkeypatch):
    """Three threads, and no array too small to split."""
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(fast, "MIN_SPLIT", 1)


def close(a, b):
    scale = max(1.0, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(a, b, rtol=TOL["rtol"], atol=TOL["atol"] * scale)


# ------------------------------------------------------------------ convolution

@st.composite
def convs(draw):
    """A valid convolution: N 1-3, C, F 1-5, kernel 1-3, stride 1-2 (stride 1 in two draws of
    three: the transposed-convolution backward), padding 0-2, dilation 1-2, groups 1-2, bias;
    contents small integers (exact sums) or normal values."""
    G = draw(st.sampled_from((1, 1, 1, 2)))
    C, F = G * draw(st.integers(1, 3)), G * draw(st.integers(1, 3))
    K = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    S = draw(st.sampled_from(((1, 1), (1, 1), (2, 2), (1, 2))))
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


@given(convs(), st.data())
def test_conv_forward_and_backward_equal_the_reference(case, data):
    x, w, b, S, P, D, G = case
    x0, w0 = x.copy(), w.copy()
    out, cache = fast.conv2d_forward(x, w, b, S, P, D, G)
    ref, ref_cache = ops.conv2d_forward(x, w, b, S, P, D, G)
    close(out, ref)
    assert out.dtype == ref.dtype and out.flags.c_contiguous
    dout = data.draw(int_arrays(out.shape, INT_VALUES))
    dx = fast.conv2d_backward_data(dout, cache)
    close(dx, ops.conv2d_backward_data(dout, ref_cache))
    assert dx.shape == x.shape and dx.flags.c_contiguous
    for got, want in zip(ops.conv2d_backward_weights(dout, cache), ops.conv2d_backward_weights(dout, ref_cache)):
        close(got, want) if want is not None else None
    np.testing.assert_array_equal(x, x0)  # inputs never modified
    np.testing.assert_array_equal(w, w0)
    F, C = w.shape[0], x.shape[1]
    event("transposed-convolution backward" if S == (1, 1) and G == 1 and F <= C and dout[:, 0].size >= 8 * F
          else "col2im backward")


def test_conv_float32_stays_float32_close_to_float64():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 6, 12, 12)), rng.standard_normal((6, 6, 3, 3)), rng.standard_normal(6)
    out32, cache32 = fast.conv2d_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), 1, 1)
    out64, cache64 = fast.conv2d_forward(x, w, b, 1, 1)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4)
    dx32 = fast.conv2d_backward_data(out32, cache32)
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, fast.conv2d_backward_data(out64, cache64), rtol=1e-4, atol=1e-3)


def test_conv_takes_the_fast_path(monkeypatch):
    """3x3 convolutions, and the stride-1 backward where the filters do not widen the
    channels, never call the reference (a spy would raise)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the reference op was called")
    monkeypatch.setattr(ops, "conv2d_forward", refuse)
    monkeypatch.setattr(ops, "conv2d_backward_data", refuse)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 10, 10))
    for F in (4, 16):  # F <= C: the transposed convolution; F > C: col2im
        out, cache = fast.conv2d_forward(x, rng.standard_normal((F, 8, 3, 3)), None, 1, 1)
        assert fast.conv2d_backward_data(out, cache).shape == x.shape


def test_reference_block_runs_the_reference(monkeypatch):
    calls = []
    forward = ops.conv2d_forward
    monkeypatch.setattr(ops, "conv2d_forward", lambda *a: calls.append(1) or forward(*a))
    x, w = np.ones((1, 2, 5, 5)), np.ones((2, 2, 3, 3))
    fast.conv2d_forward(x, w)
    assert calls == []
    with mg.fast.reference():
        fast.conv2d_forward(x, w)
        seen_elsewhere = []
        t = threading.Thread(target=lambda: seen_elsewhere.append(fast._REFERENCE.get()))
        t.start()
        t.join()
    assert calls == [1]
    assert seen_elsewhere == [False]  # only the block's own thread
    fast.conv2d_forward(x, w)
    assert calls == [1]


def test_conv_errors_name_the_problem():
    with pytest.raises(ValueError, match="input has 3 channels"):
        fast.conv2d_forward(np.ones((1, 3, 5, 5)), np.ones((2, 2, 3, 3)))


# ------------------------------------------------------------------ max pooling

@st.composite
def tiling_pools(draw):
    """Max pooling with windows that tile the input (kernel == stride, no padding): kernel
    1-3 per axis, 1-3 windows, a remainder the floor drops (or ceil mode turns into an edge
    window, which the reference handles); contents with ties, zeros, -inf and NaN."""
    K = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    n = [draw(st.integers(1, 3)) * k + draw(st.integers(0, k - 1)) for k in K]
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), n[0], n[1])
    values = draw(st.sampled_from((INT_VALUES, SPECIAL_VALUES)))
    x = draw(int_arrays(shape, values))
    stride = draw(st.sampled_from((None, K)))
    return x, K, stride, draw(st.booleans())


@given(tiling_pools(), st.sampled_from(mg.ops.pool.TIES), st.data())
def test_maxpool_forward_and_backward_equal_the_reference(case, ties, data):
    x, K, stride, ceil = case
    x0 = x.copy()
    out, cache = fast.maxpool2d_forward(x, K, stride, ceil_mode=ceil)
    ref, ref_cache = ops.maxpool2d_forward(x, K, stride, ceil_mode=ceil)
    np.testing.assert_array_equal(out, ref)  # NaN where the reference has NaN
    dout = data.draw(int_arrays(out.shape, INT_VALUES))
    np.testing.assert_array_equal(fast.maxpool2d_backward(dout, cache, ties),
                                  ops.maxpool2d_backward(dout, ref_cache, ties))
    indices, geometry, *_ = cache  # a tiling pool's compact switches read as the reference's cache
    np.testing.assert_array_equal(indices, ref_cache[0])
    assert indices.dtype == np.int64 and geometry.x_shape == x.shape
    np.testing.assert_array_equal(x, x0)
    event("tiling windows" if isinstance(cache, fast.Switches) else "reference (ceil-mode edge windows)")


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
    _, tape = model.forward(x)
    event("a tiling max pool" if any(isinstance(c, fast.Switches) for _, _, c in tape) else "no tiling max pool")
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


def test_threads_follow_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert fast.threads() == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert fast.threads() >= 1


def test_an_error_inside_a_block_reaches_the_caller():
    def work(block):
        if block.start > 0:
            raise ValueError(f"block {block} failed")
    with pytest.raises(ValueError, match="failed"):
        fast._each_block(9, 10 ** 6, work)


def _forked_child(queue):
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8))
    out, cache = fast.conv2d_forward(x, np.ones((4, 4, 3, 3)), None, 1, 1)
    queue.put(float(fast.conv2d_backward_data(out, cache).sum()))


def test_a_forked_process_can_use_the_fast_path():
    """The thread pool does not survive fork(); a child must build its own instead of waiting
    on threads that are gone."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8))
    out, cache = fast.conv2d_forward(x, np.ones((4, 4, 3, 3)), None, 1, 1)  # the parent's pool exists
    want = float(fast.conv2d_backward_data(out, cache).sum())
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_forked_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0, "the forked child hung or failed"
    assert queue.get(timeout=5) == pytest.approx(want, rel=1e-12)
