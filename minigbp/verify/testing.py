"""pytest helpers: check a framework's attribution function, or a student's layers, against minigbp.

For framework authors::

    from minigbp.verify.testing import assert_matches

    def test_guided_backprop_is_guided():
        assert_matches(make_model(), my_guided_backprop, mode="guided")

``assert_matches`` runs :func:`minigbp.verify.check` and raises ``AssertionError``
naming the mode the function matched instead (or "none", with the first layer
where it diverges), followed by the full report.

For courses: checkers that run a student's own layer functions on
hypothesis-generated cases (integer values, so pooling windows tie and ReLUs see
exact zeros; all-negative values, so zero-padded max pooling is caught; random
normal values) and compare with minigbp's ops in float64. A failure raises
``AssertionError`` with the (shrunk) failing case: shapes, hyperparameters, the
arrays, minigbp's answer and the student's.

Signatures (``style="minigbp"``, the default: the same as :mod:`minigbp.ops`, with
PyTorch's keyword names)::

    conv_forward(x, w, b, stride=1, padding=0)            -> out, cache
    conv_backward(dout, cache)                            -> dx, dw, db
    maxpool_forward(x, kernel_size, stride=None, padding=0) -> out, cache   (padding=False: no padding)
    maxpool_backward(dout, cache)                         -> dx
    relu_forward(x)                                       -> out, cache
    relu_backward(dout, cache)      (or (dout, cache, mode) when modes are checked) -> dx

``x`` (N, C, H, W), ``w`` (F, C/groups, HH, WW), ``b`` (F,), all float64; ints for
``stride``, ``padding``, ``kernel_size``; ``dilation=`` and ``groups=`` (conv) or
``dilation=`` and ``ceil_mode=`` (pooling) are passed only when the checker is asked
to test them. ``style="cs231n"`` uses CS231n's signatures instead:
``conv_forward(x, w, b, conv_param)`` with ``conv_param = {"stride": S, "pad": P}`` and
``max_pool_forward(x, pool_param)`` with ``{"pool_height", "pool_width", "stride"}``
(no padding). The style is detected from a parameter named ``conv_param`` or
``pool_param`` unless given.

The rules checked are minigbp's, which are PyTorch's: max pooling pads with -inf
(never zeros) and routes the signal to the *first* maximum of a window in
row-major order; at ``x == 0`` a ReLU blocks the signal; backward functions never
modify their inputs. hypothesis is needed (a test dependency of minigbp); the
checkers follow the active hypothesis settings profile (``max_examples`` overrides).
"""

import inspect

import numpy as np

from .. import ops
from ..ops.relu import check_mode

__all__ = ["assert_matches", "check_conv_forward", "check_conv_backward", "check_maxpool_forward",
           "check_maxpool_backward", "check_relu_forward", "check_relu_backward", "VALUE_KINDS"]

#: kinds of array contents the checkers draw: small integers (ties, exact zeros),
#: negative integers (zero padding shows), standard normal
VALUE_KINDS = ("int", "negative", "normal")

TOL = 1e-9


# ------------------------------------------------------------------- frameworks

def assert_matches(module, attribute_fn, mode="guided", **check_kwargs):
    """Assert that ``attribute_fn`` computes minigbp's ``mode`` on ``module``; return the report.

    Parameters as :func:`minigbp.verify.check` (``attribute_fn(model, x, target) -> tensor``).
    The failure message names what the function matched instead: another mode,
    none (with the first layer where it diverges), or the error it raised.
    """
    from .check import check

    check_mode(mode)
    report = check(module, attribute_fn, mode=mode, **check_kwargs)
    if report.ok:
        return report
    name = report.function
    if report.verdict == "error":
        got = f"it failed: {report.error}"
    elif report.verdict == "ambiguous":
        got = f"it matches {' and '.join(report.matches)} (indistinguishable on these inputs), not {mode!r}"
    elif report.verdict == "none":
        got = "it matches none of vanilla, deconvnet and guided"
        p = report.probe
        if p and p.possible:
            d = p.divergence.get(mode)
            if d is not None:
                got += f"; against {mode} it first diverges at {d.layer or 'the output seed'}"
        elif p:
            got += f" (per-layer probe not possible: {p.reason})"
    else:
        got = f"it matches {report.verdict!r} instead"
    raise AssertionError(f"{name} does not compute minigbp's {mode!r} mode: {got}\n\n{report}")


# ---------------------------------------------------------------------- courses

def _hyp():
    try:
        import hypothesis
        from hypothesis import strategies as st
    except ImportError as e:  # pragma: no cover - hypothesis is a test dependency
        raise ImportError("minigbp.verify.testing's layer checkers need hypothesis (pip install hypothesis)") from e
    return hypothesis, st


def _style(fn, style, param):
    if style is not None:
        if style not in ("minigbp", "cs231n"):
            raise ValueError(f"style must be 'minigbp' or 'cs231n', got {style!r}")
        return style
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "minigbp"
    return "cs231n" if param in names else "minigbp"


def _fill(rng, shape, kind):
    if kind == "int":
        return rng.integers(-3, 4, size=shape).astype(np.float64)
    if kind == "negative":
        return rng.integers(-3, 0, size=shape).astype(np.float64)
    return rng.standard_normal(shape)


def _show(a):
    return np.array2string(np.asarray(a), precision=4, separator=", ", threshold=200, max_line_width=100)


def _fail(what, case, arrays, detail):
    lines = [f"{what}: {detail}", "case: " + ", ".join(f"{k}={v}" for k, v in case.items())]
    for name, a in arrays.items():
        lines.append(f"{name} =\n{_show(a)}")
    raise AssertionError("\n".join(lines))


def _compare(what, got, want, case, arrays, label):
    if got is None and want is None:
        return
    got = np.asarray(got) if got is not None else None
    if got is None or got.shape != want.shape:
        _fail(what, case, {**arrays, f"expected {label}": want, f"got {label}": got},
              f"{label} has shape {None if got is None else got.shape}, expected {want.shape}")
    diff = np.abs(got.astype(np.float64) - want)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    if np.isnan(diff).any() or diff.max(initial=0.0) > TOL * scale:
        at = np.unravel_index(np.nanargmax(np.where(np.isnan(diff), np.inf, diff)), diff.shape)
        _fail(what, case, {**arrays, f"expected {label} (minigbp)": want, f"got {label}": got},
              f"{label} differs from minigbp's: max abs error {float(np.nanmax(diff)):.3g} at index "
              f"{tuple(int(i) for i in at)} (expected {float(want[at])!r}, got {float(got[at])!r})")


def _call(what, fn, args, kwargs, case, arrays):
    """Call the student's function on copies; fail if it raises or modifies its inputs."""
    copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    try:
        result = fn(*copies, **kwargs)
    except Exception as e:
        _fail(what, case, arrays, f"raised {type(e).__name__}: {e}")
    for i, (a, c) in enumerate(zip(args, copies)):
        if isinstance(a, np.ndarray) and not np.array_equal(a, c, equal_nan=True):
            _fail(what, case, arrays, f"modified its input argument {i} in place (write into a new array)")
    return result


def _out_cache(what, result, case, arrays, need_cache):
    if isinstance(result, tuple) and len(result) == 2:
        return result
    if need_cache:
        _fail(what, case, arrays, "the forward function must return (out, cache)")
    return result, None


def _run(test, strategy, max_examples):
    hypothesis, _ = _hyp()
    kwargs = dict(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    if max_examples is not None:
        kwargs["max_examples"] = max_examples
    hypothesis.settings(**kwargs)(hypothesis.given(strategy)(test))()


# ------------------------------------------------------------------ convolution

def _conv_cases(cs231n, dilation, groups, values):
    _, st = _hyp()

    @st.composite
    def case(draw):
        G = draw(st.integers(1, 2)) if groups and not cs231n else 1
        N, C, F = draw(st.integers(1, 2)), G * draw(st.integers(1, 2)), G * draw(st.integers(1, 3))
        HH, WW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        S = draw(st.integers(1, 3))
        P = draw(st.integers(0, 2))
        D = draw(st.integers(1, 2)) if dilation and not cs231n else 1
        eh, ew = D * (HH - 1) + 1, D * (WW - 1) + 1
        H = draw(st.integers(max(1, eh - 2 * P), eh - 2 * P + 5))
        W = draw(st.integers(max(1, ew - 2 * P), ew - 2 * P + 5))
        kind = draw(st.sampled_from(values))
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        return dict(N=N, C=C, F=F, H=H, W=W, HH=HH, WW=WW, stride=S, padding=P, dilation=D, groups=G,
                    kind=kind, rng=rng)

    return case()


def _conv_setup(c):
    rng = c.pop("rng")
    x = _fill(rng, (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    w = _fill(rng, (c["F"], c["C"] // c["groups"], c["HH"], c["WW"]), c["kind"])
    b = _fill(rng, (c["F"],), c["kind"])
    want, cache = ops.conv2d_forward(x, w, b, c["stride"], c["padding"], c["dilation"], c["groups"])
    dout = _fill(rng, want.shape, c["kind"])
    case = {"x.shape": x.shape, "w.shape": w.shape, "b.shape": b.shape, "stride": c["stride"],
            "padding": c["padding"]}
    if c["dilation"] != 1:
        case["dilation"] = c["dilation"]
    if c["groups"] != 1:
        case["groups"] = c["groups"]
    return x, w, b, want, cache, dout, case, rng


def _conv_call(fn, cs231n, x, w, b, c, dilation, groups):
    if cs231n:
        return (x, w, b, {"stride": c["stride"], "pad": c["padding"]}), {}
    kwargs = {"stride": c["stride"], "padding": c["padding"]}
    if dilation:
        kwargs["dilation"] = c["dilation"]
    if groups:
        kwargs["groups"] = c["groups"]
    return (x, w, b), kwargs


def check_conv_forward(forward, *, style=None, dilation=False, groups=False, values=VALUE_KINDS,
                       max_examples=None):
    """Check a student's convolution forward against :func:`minigbp.ops.conv2d_forward`.

    ``forward(x, w, b, stride=S, padding=P[, dilation=D][, groups=G]) -> out`` or ``(out, cache)``
    (or CS231n's ``forward(x, w, b, conv_param)``); see the module docstring.
    Raises ``AssertionError`` with the failing case.
    """
    cs231n = _style(forward, style, "conv_param") == "cs231n"

    def test(c):
        x, w, b, want, _, _, case, _ = _conv_setup(c)
        args, kwargs = _conv_call(forward, cs231n, x, w, b, c, dilation, groups)
        arrays = {"x": x, "w": w, "b": b}
        out, _ = _out_cache("conv forward", _call("conv forward", forward, args, kwargs, case, arrays),
                            case, arrays, False)
        _compare("conv forward", out, want, case, arrays, "out")

    _run(test, _conv_cases(cs231n, dilation, groups, values), max_examples)


def check_conv_backward(forward, backward, *, style=None, dilation=False, groups=False, values=VALUE_KINDS,
                        max_examples=None):
    """Check a student's convolution backward (with its own forward's cache) against minigbp.

    ``backward(dout, cache) -> (dx, dw, db)``, ``cache`` from ``forward`` (see
    :func:`check_conv_forward`). ``dx`` is compared with :func:`minigbp.ops.conv2d_backward`:
    the transposed convolution, i.e. the *flipped* filters slid over ``dout``.
    """
    cs231n = _style(forward, style, "conv_param") == "cs231n"

    def test(c):
        x, w, b, _, cache, dout, case, _ = _conv_setup(c)
        dx, dw, db = ops.conv2d_backward(dout, cache)
        args, kwargs = _conv_call(forward, cs231n, x, w, b, c, dilation, groups)
        arrays = {"x": x, "w": w, "b": b}
        _, their_cache = _out_cache("conv forward", _call("conv forward", forward, args, kwargs, case, arrays),
                                    case, arrays, True)
        arrays["dout"] = dout
        got = _call("conv backward", backward, (dout, their_cache), {}, case, arrays)
        if not (isinstance(got, tuple) and len(got) == 3):
            _fail("conv backward", case, arrays, "must return (dx, dw, db)")
        for label, g, want in zip(("dx", "dw", "db"), got, (dx, dw, db)):
            _compare("conv backward", g, want, case, arrays, label)

    _run(test, _conv_cases(cs231n, dilation, groups, values), max_examples)


# ------------------------------------------------------------------ max pooling

def _pool_cases(cs231n, padding, dilation, ceil_mode, values):
    _, st = _hyp()

    @st.composite
    def case(draw):
        N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
        HH, WW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        S = draw(st.integers(1, 3))
        P = draw(st.integers(0, min(HH, WW) // 2)) if padding and not cs231n else 0
        D = draw(st.integers(1, 2)) if dilation and not cs231n else 1
        ceil = draw(st.booleans()) if ceil_mode and not cs231n else False
        eh, ew = D * (HH - 1) + 1, D * (WW - 1) + 1
        # with dilation, inputs at least one window wide (no window lies wholly in the padding)
        lo_h, lo_w = (eh, ew) if D > 1 else (max(1, eh - 2 * P), max(1, ew - 2 * P))
        H = draw(st.integers(lo_h, lo_h + 5))
        W = draw(st.integers(lo_w, lo_w + 5))
        kind = draw(st.sampled_from(values))
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        return dict(N=N, C=C, H=H, W=W, kernel_size=(HH, WW), stride=S, padding=P, dilation=D,
                    ceil_mode=ceil, kind=kind, rng=rng)

    return case()


def _pool_setup(c):
    rng = c.pop("rng")
    x = _fill(rng, (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    want, cache = ops.maxpool2d_forward(x, c["kernel_size"], c["stride"], c["padding"], c["dilation"],
                                        c["ceil_mode"])
    dout = _fill(rng, want.shape, c["kind"])
    case = {"x.shape": x.shape, "kernel_size": c["kernel_size"], "stride": c["stride"], "padding": c["padding"]}
    if c["dilation"] != 1:
        case["dilation"] = c["dilation"]
    if c["ceil_mode"]:
        case["ceil_mode"] = True
    return x, want, cache, dout, case


def _pool_call(cs231n, x, c, padding, dilation, ceil_mode):
    if cs231n:
        HH, WW = c["kernel_size"]
        return (x, {"pool_height": HH, "pool_width": WW, "stride": c["stride"]}), {}
    kwargs = {"stride": c["stride"]}
    if padding:
        kwargs["padding"] = c["padding"]
    if dilation:
        kwargs["dilation"] = c["dilation"]
    if ceil_mode:
        kwargs["ceil_mode"] = c["ceil_mode"]
    return (x, c["kernel_size"]), kwargs


def check_maxpool_forward(forward, *, style=None, padding=True, dilation=False, ceil_mode=False,
                          values=VALUE_KINDS, max_examples=None):
    """Check a student's max pooling forward against :func:`minigbp.ops.maxpool2d_forward`.

    ``forward(x, kernel_size, stride=S[, padding=P][, dilation=D][, ceil_mode=B])``,
    ``kernel_size`` a pair ``(HH, WW)`` (or CS231n's ``forward(x, pool_param)``); each
    optional keyword is passed only when its flag is true. Padding counts as ``-inf``:
    a zero-padded implementation fails on negative inputs.
    """
    cs231n = _style(forward, style, "pool_param") == "cs231n"

    def test(c):
        x, want, _, _, case = _pool_setup(c)
        args, kwargs = _pool_call(cs231n, x, c, padding, dilation, ceil_mode)
        arrays = {"x": x}
        out, _ = _out_cache("maxpool forward", _call("maxpool forward", forward, args, kwargs, case, arrays),
                            case, arrays, False)
        _compare("maxpool forward", out, want, case, arrays, "out")

    _run(test, _pool_cases(cs231n, padding, dilation, ceil_mode, values), max_examples)


def check_maxpool_backward(forward, backward, *, style=None, padding=True, dilation=False, ceil_mode=False,
                           values=VALUE_KINDS, max_examples=None):
    """Check a student's max pooling backward (with its own forward's cache) against minigbp.

    ``backward(dout, cache) -> dx``: each window's signal goes to its first maximum
    (row-major order; PyTorch's rule), overlapping windows add up.
    """
    cs231n = _style(forward, style, "pool_param") == "cs231n"

    def test(c):
        x, _, cache, dout, case = _pool_setup(c)
        want = ops.maxpool2d_backward(dout, cache)
        args, kwargs = _pool_call(cs231n, x, c, padding, dilation, ceil_mode)
        arrays = {"x": x}
        _, their_cache = _out_cache("maxpool forward",
                                    _call("maxpool forward", forward, args, kwargs, case, arrays),
                                    case, arrays, True)
        arrays["dout"] = dout
        got = _call("maxpool backward", backward, (dout, their_cache), {}, case, arrays)
        _compare("maxpool backward", got, want, case, arrays, "dx")

    _run(test, _pool_cases(cs231n, padding, dilation, ceil_mode, values), max_examples)


# ------------------------------------------------------------------------- ReLU

def _relu_cases(values):
    _, st = _hyp()

    @st.composite
    def case(draw):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
        kind = draw(st.sampled_from(values))
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        return dict(shape=shape, kind=kind, rng=rng)

    return case()


def check_relu_forward(forward, *, values=VALUE_KINDS, max_examples=None):
    """Check a student's ``relu_forward(x) -> out`` or ``(out, cache)`` against ``max(x, 0)``."""

    def test(c):
        x = _fill(c["rng"], c["shape"], c["kind"])
        case, arrays = {"x.shape": x.shape}, {"x": x}
        out, _ = _out_cache("relu forward", _call("relu forward", forward, (x,), {}, case, arrays),
                            case, arrays, False)
        _compare("relu forward", out, ops.relu_forward(x)[0], case, arrays, "out")

    _run(test, _relu_cases(values), max_examples)


def check_relu_backward(forward, backward, *, modes=("vanilla",), values=VALUE_KINDS, max_examples=None):
    """Check a student's ReLU backward in each of ``modes`` against :func:`minigbp.ops.relu_backward`.

    ``backward(dout, cache)`` for the vanilla gradient alone, ``backward(dout, cache, mode)``
    when ``modes`` holds more (e.g. ``minigbp.MODES`` for a guided-backprop exercise).
    The signal at ``x == 0`` must be 0.
    """
    for m in modes:
        check_mode(m)
    plain = tuple(modes) == ("vanilla",)

    def test(c):
        rng = c["rng"]
        x = _fill(rng, c["shape"], c["kind"])
        dout = _fill(rng, c["shape"], c["kind"])
        case, arrays = {"x.shape": x.shape}, {"x": x}
        _, cache = _out_cache("relu forward", _call("relu forward", forward, (x,), {}, case, arrays),
                              case, arrays, True)
        arrays["dout"] = dout
        for m in modes:
            args = (dout, cache) if plain else (dout, cache, m)
            got = _call(f"relu backward ({m})", backward, args, {}, {**case, "mode": m}, arrays)
            _compare(f"relu backward ({m})", got, ops.relu_backward(dout, x, m), {**case, "mode": m}, arrays, "dx")

    _run(test, _relu_cases(values), max_examples)
