"""Naive loops vs vectorized ops, float64 (DESIGN.md, oracle 1). No torch needed.

For every op in ``minigbp.ops`` hypothesis draws a configuration (the same strategies as
the torch tests, small sizes because the naive versions loop in Python), runs the naive
and the vectorized forward and backward, and asserts:

* both accept or both reject (``ValueError``) the configuration;
* outputs, max-pooling switches, input signals and parameter gradients agree within
  :data:`TOL`; each backward also accepts the other version's cache (same format);
* no backward writes into ``dout`` or the cache.
"""

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from minigbp import ops
from torch_helpers import adaptive_cases, assert_close, conv_cases, fill, pool_cases, rngs

#: float64 tolerance relative to max(1, max |naive|): the two versions add the same
#: products in different orders (BLAS blocks vs Python loops), which differs by a few ulps
#: (~1e-15 relative) on these sizes; 1e-12 is far below any real disagreement.
TOL = 1e-12

MODES = ops.MODES


def both(naive, fast):
    """Run ``naive()`` and ``fast()``: the paired-error rule, then both results (or None)."""
    results, errors = [], []
    for fn in (naive, fast):
        try:
            results.append(fn())
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - anything but ValueError fails below
            results.append(None)
            errors.append(e)
    note(f"naive: {errors[0]!r}; fast: {errors[1]!r}")
    for e in errors:
        assert e is None or isinstance(e, ValueError), f"unexpected {e!r}"
    assert (errors[0] is None) == (errors[1] is None), f"naive {errors[0]!r} vs fast {errors[1]!r}"
    event("rejected" if errors[0] is not None else "accepted")
    return results if errors[0] is None else None


def check_backwards(backward_naive, backward_fast, dout, cache_naive, cache_fast):
    """Backward of each version with both caches; all four must agree. Returns the naive one."""
    dout0 = dout.copy()
    ref = backward_naive(dout, cache_naive)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for bw, cache in ((backward_naive, cache_fast), (backward_fast, cache_naive), (backward_fast, cache_fast)):
        got = bw(dout, cache)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(ref)
        for g, r, what in zip(got, ref, ("dx", "dw", "db")):
            if r is None:
                assert g is None, what
                continue
            assert g.dtype == np.float64, what
            assert_close(g, r, TOL, what=f"{bw.__name__} {what}")
    np.testing.assert_array_equal(dout, dout0)
    return ref


# --------------------------------------------------------------------------- conv2d

@given(conv_cases())
def test_conv2d_naive_vs_fast(c):
    rng = c["rng"]
    x = fill(rng, (c["N"], c["xc"], c["H"], c["W"]), c["kind"])
    cg = max(c["cin"] // max(c["groups"], 1), 1)
    kernel = c["kernel"] if isinstance(c["kernel"], tuple) else (c["kernel"], c["kernel"])
    w = fill(rng, (c["cout"], cg) + tuple(max(k, 0) for k in kernel), c["kind"])
    b = fill(rng, (c["cout"],), c["kind"]) if c["bias"] else None
    args = (c["stride"], c["padding"], c["dilation"], c["groups"])
    res = both(lambda: ops.conv2d_forward_naive(x, w, b, *args), lambda: ops.conv2d_forward(x, w, b, *args))
    if res is None:
        return
    (out_n, cache_n), (out_f, cache_f) = res
    assert out_f.dtype == np.float64
    assert_close(out_f, out_n, TOL, what="forward")
    dout = fill(rng, out_n.shape, c["kind"])
    dx, dw, db = check_backwards(ops.conv2d_backward_naive, ops.conv2d_backward, dout, cache_n, cache_f)
    # the two halves the layer uses
    assert_close(ops.conv2d_backward_data(dout, cache_f), dx, TOL, what="backward_data")
    dw_f, db_f = ops.conv2d_backward_weights(dout, cache_f)
    assert_close(dw_f, dw, TOL, what="backward_weights dw")
    assert (db_f is None) == (b is None)
    if b is not None:
        assert_close(db_f, db, TOL, what="backward_weights db")


# --------------------------------------------------------------------------- linear

@st.composite
def linear_cases(draw):
    fin = draw(st.integers(1, 6))
    return dict(N=draw(st.integers(1, 3)), fin=fin, fout=draw(st.integers(1, 5)), bias=draw(st.booleans()),
                xf=fin + draw(st.sampled_from((0,) * 6 + (1,))),
                kind=draw(st.sampled_from(("int", "cont"))), rng=draw(rngs()))


@given(linear_cases())
def test_linear_naive_vs_fast(c):
    rng = c["rng"]
    x = fill(rng, (c["N"], c["xf"]), c["kind"])
    w = fill(rng, (c["fout"], c["fin"]), c["kind"])
    b = fill(rng, (c["fout"],), c["kind"]) if c["bias"] else None
    res = both(lambda: ops.linear_forward_naive(x, w, b), lambda: ops.linear_forward(x, w, b))
    if res is None:
        return
    (out_n, cache_n), (out_f, cache_f) = res
    assert_close(out_f, out_n, TOL, what="forward")
    dout = fill(rng, out_n.shape, c["kind"])
    dx, _, _ = check_backwards(ops.linear_backward_naive, ops.linear_backward, dout, cache_n, cache_f)
    assert_close(ops.linear_backward_data(dout, cache_f), dx, TOL, what="backward_data")


# ------------------------------------------------------------------------ max pooling

@given(pool_cases(dilated=True))
def test_maxpool2d_naive_vs_fast(c):
    rng = c["rng"]
    x = fill(rng, (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    args = (c["kernel"], c["stride"], c["padding"], c["dilation"], c["ceil_mode"])
    res = both(lambda: ops.maxpool2d_forward_naive(x, *args), lambda: ops.maxpool2d_forward(x, *args))
    if res is None:
        return
    (out_n, cache_n), (out_f, cache_f) = res
    assert_close(out_f, out_n, TOL, what="forward")
    np.testing.assert_array_equal(cache_f[0], cache_n[0], err_msg="switches")
    dout = fill(rng, out_n.shape, "int" if c["kind"] == "special" else c["kind"])
    check_backwards(ops.maxpool2d_backward_naive, ops.maxpool2d_backward, dout, cache_n, cache_f)


# -------------------------------------------------------------------- average pooling

@given(pool_cases(dilated=False))
def test_avgpool2d_naive_vs_fast(c):
    rng = c["rng"]
    x = fill(rng, (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    args = (c["kernel"], c["stride"], c["padding"], c["ceil_mode"], c["count_include_pad"])
    res = both(lambda: ops.avgpool2d_forward_naive(x, *args), lambda: ops.avgpool2d_forward(x, *args))
    if res is None:
        return
    (out_n, cache_n), (out_f, cache_f) = res
    assert_close(out_f, out_n, TOL, what="forward")
    dout = fill(rng, out_n.shape, c["kind"])
    check_backwards(ops.avgpool2d_backward_naive, ops.avgpool2d_backward, dout, cache_n, cache_f)


@given(adaptive_cases())
def test_adaptive_avgpool2d_naive_vs_fast(c):
    rng = c["rng"]
    x = fill(rng, (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    size = c["output_size"]
    res = both(lambda: ops.adaptive_avgpool2d_forward_naive(x, size), lambda: ops.adaptive_avgpool2d_forward(x, size))
    (out_n, cache_n), (out_f, cache_f) = res  # every drawn size is valid
    assert_close(out_f, out_n, TOL, what="forward")
    dout = fill(rng, out_n.shape, c["kind"])
    check_backwards(ops.adaptive_avgpool2d_backward_naive, ops.adaptive_avgpool2d_backward, dout, cache_n, cache_f)


# ----------------------------------------------------------------------------- relu

@given(st.integers(1, 4).flatmap(lambda nd: st.lists(st.integers(1, 4), min_size=nd, max_size=nd)),
       st.sampled_from(("int", "cont")), rngs())
def test_relu_backward_naive_vs_fast_all_modes(shape, kind, rng):
    x = fill(rng, tuple(shape), "int")  # exact zeros in x
    dout = fill(rng, tuple(shape), kind)  # exact zeros in dout when kind == "int"
    out, cache = ops.relu_forward(x)
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0.0))
    x0, dout0 = x.copy(), dout.copy()
    for mode in MODES:
        naive = ops.relu_backward_naive(dout, cache, mode)
        fast = ops.relu_backward(dout, cache, mode)
        assert fast.dtype == naive.dtype == np.float64
        np.testing.assert_array_equal(fast, naive, err_msg=mode)  # elementwise: exact
        # blocked exactly where the mode's mask says so; passed through unchanged elsewhere
        keep = {"vanilla": x > 0, "deconvnet": dout > 0, "guided": (x > 0) & (dout > 0)}[mode]
        np.testing.assert_array_equal(fast, np.where(keep, dout, 0.0), err_msg=mode)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dout, dout0)


@pytest.mark.parametrize("backward", [ops.relu_backward, ops.relu_backward_naive])
def test_relu_backward_rejects_unknown_mode(backward):
    with pytest.raises(ValueError):
        backward(np.ones(3), np.ones(3), "smoothgrad")


# ------------------------------------------------------------------------------ pad

@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5),
       st.tuples(*[st.integers(0, 3)] * 4), st.sampled_from([0.0, -np.inf]), rngs())
def test_pad2d_naive_vs_fast(N, C, H, W, pads, value, rng):
    x = rng.standard_normal((N, C, H, W))
    (out_n, cache_n), (out_f, cache_f) = both(lambda: ops.pad2d_forward_naive(x, pads, value),
                                              lambda: ops.pad2d_forward(x, pads, value))
    np.testing.assert_array_equal(out_f, out_n)
    top, bottom, left, right = pads
    assert out_f.shape == (N, C, top + H + bottom, left + W + right)
    dout = rng.standard_normal(out_n.shape)
    dx = check_backwards(ops.pad2d_backward_naive, ops.pad2d_backward, dout, cache_n, cache_f)[0]
    np.testing.assert_array_equal(dx, dout[:, :, top:top + H, left:left + W])


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from(["int", "cont"]), rngs())
def test_global_max_naive_vs_fast(N, C, H, W, kind, rng):
    x = fill(rng, (N, C, H, W), kind)
    (out_n, cache_n), (out_f, cache_f) = both(lambda: ops.global_max_forward_naive(x),
                                              lambda: ops.global_max_forward(x))
    np.testing.assert_array_equal(out_f, out_n)
    dout = fill(rng, out_n.shape, kind)
    dx = check_backwards(ops.global_max_backward_naive, ops.global_max_backward, dout, cache_n, cache_f)[0]
    np.testing.assert_allclose(dx.sum(axis=(2, 3), keepdims=True), dout, rtol=1e-12, atol=1e-12)  # shared, not lost
