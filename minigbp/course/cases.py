"""The examples the course checkers run, drawn by hypothesis.

hypothesis draws every number itself (shapes, hyperparameters and the entries of arrays
where ties and zeros matter), so a failing example shrinks to small shapes and small
integers, and the checkers can aim at the hard cases on purpose. Three kinds of array
contents (``KINDS``):

* ``"distinct"``: distinct half-integers, none zero, in a shuffled order -- no tied
  maxima, no ``x == 0``;
* ``"int"``: small integers in [-3, 3] -- windows tie and ReLUs see exact zeros;
* ``"negative"``: negative integers -- a max pooling that pads with zeros shows.

A drawn example is a :class:`Case`: hyperparameters in minigbp's names, the named input
arrays, the call style and the dtype.
"""

import math

import numpy as np

KINDS = ("distinct", "int", "negative")

#: ``conditions``: which shapes the checkers may draw
CONDITIONS = {
    "pytorch": "every shape PyTorch accepts",
    "cs231n": "only shapes CS231n's docstrings let students assume: convolutions tile the padded input "
              "exactly ((H + 2P - HH) % stride == 0), pooling has no padding and (H - HH) % stride == 0",
}


def check_conditions(conditions):
    if conditions not in CONDITIONS:
        raise ValueError(f"unknown conditions {conditions!r}; expected one of {', '.join(CONDITIONS)}")


class Case:
    """One drawn example: ``params`` (minigbp's names: stride, padding, kernel_size, ...),
    ``inputs`` (name -> array, in call order), ``style`` ("minigbp" | "cs231n"), and, set by
    the checker, ``reference`` (minigbp's ``out, cache``) and, for a backward check, ``dout``."""

    def __init__(self, params, inputs, style):
        self.params, self.inputs, self.style = params, inputs, style
        self.reference = self.dout = None

    @property
    def dtype(self):
        return next(iter(self.inputs.values())).dtype


def array(draw, st, shape, kind, dtype=np.float64):
    """An array of ``shape`` whose entries hypothesis draws (see ``KINDS``)."""
    n = math.prod(shape)
    if kind == "distinct":  # no ties or zeros to aim for: a shuffle hypothesis need not shrink entry by entry
        perm = np.random.default_rng(draw(st.integers(0, 2 ** 16))).permutation(n).astype(np.float64)
        a = (perm - n // 2 + 0.5) / 2  # distinct, none zero, exact in float32
    elif kind == "int":
        a = np.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=np.float64)
    elif kind == "negative":
        a = np.array(draw(st.lists(st.integers(-4, -1), min_size=n, max_size=n)), dtype=np.float64)
    else:
        raise ValueError(f"unknown kind of values {kind!r}; expected one of {', '.join(KINDS)}")
    return a.reshape(shape).astype(dtype)


def _stride(draw, st, which):
    if which == "1":
        return 1
    return draw(st.integers(2, 3)) if which == ">1" else draw(st.integers(1, 3))


def _size(draw, st, extent, S, P, conditions):
    """An input size ``H`` for windows of ``extent`` taps, stride ``S``, padding ``P``: at least one
    window fits; under CS231n's conditions the windows tile it exactly, ``(H + 2P - extent) % S == 0``."""
    base = extent - 2 * P
    if conditions == "cs231n":
        k0 = max(0, -((base - 1) // S))  # the smallest k with base + k*S >= 1
        return base + S * (k0 + draw(st.integers(0, 3)))
    lo = max(1, base)
    return draw(st.integers(lo, lo + 5))


def conv(draw, st, r, conditions, options, style):
    """x (N, C, H, W), w (F, C/groups, HH, WW), b (F,); stride, padding[, dilation][, groups]."""
    G = draw(st.integers(1, 2)) if options.get("groups") and style == "minigbp" else 1
    N, C, F = draw(st.integers(1, 2)), G * draw(st.integers(1, 2)), G * draw(st.integers(1, 2))
    HH, WW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    S = _stride(draw, st, r.get("stride", "any"))
    P = {"0": 0, ">0": draw(st.integers(1, 2)), "any": draw(st.integers(0, 2))}[r.get("padding", "any")]
    D = draw(st.integers(1, 2)) if options.get("dilation") and style == "minigbp" else 1
    H = _size(draw, st, D * (HH - 1) + 1, S, P, conditions)
    W = _size(draw, st, D * (WW - 1) + 1, S, P, conditions)
    dtype, kind = r.get("dtype", np.float64), r["values"]
    params = {"stride": S, "padding": P}
    if D != 1:
        params["dilation"] = D
    if G != 1:
        params["groups"] = G
    inputs = {"x": array(draw, st, (N, C, H, W), kind, dtype),
              "w": array(draw, st, (F, C // G, HH, WW), kind, dtype),
              "b": array(draw, st, (F,), kind, dtype)}
    return Case(params, inputs, style)


def pool(draw, st, r, conditions, options, style, kind_of_pool="max"):
    """x (N, C, H, W); kernel_size (HH, WW), stride, padding[, dilation][, ceil_mode][, count_include_pad].

    ``r["stride"]``: ``"kernel"`` (square windows side by side, stride = window), ``"other"`` (stride
    differs from the window: overlapping windows or gaps), ``"mixed"`` (half each of "kernel" and
    "any"), ``"any"``; windows are at least 2 wide with ``r["ties"]`` or padding."""
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    which = r.get("stride", "any")
    if which == "mixed":  # half of the examples with windows side by side, as CS231n's fast layer needs
        which = draw(st.sampled_from(["kernel", "any"]))
    lo = 2 if which in ("kernel", "other") or r.get("padding") == ">0" or r.get("ties") else 1
    HH = draw(st.integers(lo, 3))
    if which == "kernel":
        WW = S = HH
    else:
        WW, S = draw(st.integers(lo, 3)), draw(st.integers(1, 3))
        if which == "other" and S == HH == WW:
            S = HH - 1
    padding_ok = options.get("padding", True) and conditions == "pytorch" and style == "minigbp"
    want_pad = r.get("padding", "0")
    P = 0
    if padding_ok and min(HH, WW) >= 2 and want_pad != "0":
        P = draw(st.integers(1 if want_pad == ">0" else 0, min(HH, WW) // 2))
    D = draw(st.integers(1, 2)) if options.get("dilation") and style == "minigbp" else 1
    ceil = draw(st.booleans()) if options.get("ceil_mode") and style == "minigbp" else False
    eh, ew = D * (HH - 1) + 1, D * (WW - 1) + 1
    if D > 1:  # inputs at least one window wide (no window lies wholly in the padding)
        H, W = draw(st.integers(eh, eh + 5)), draw(st.integers(ew, ew + 5))
    else:
        H, W = _size(draw, st, eh, S, P, conditions), _size(draw, st, ew, S, P, conditions)
    params = {"kernel_size": (HH, WW), "stride": S, "padding": P}
    if D != 1:
        params["dilation"] = D
    if ceil:
        params["ceil_mode"] = True
    if kind_of_pool == "avg" and options.get("count_include_pad") and P > 0:
        params["count_include_pad"] = draw(st.booleans())
    x = array(draw, st, (N, C, H, W), r["values"], r.get("dtype", np.float64))
    return Case(params, {"x": x}, style)


def relu(draw, st, r, conditions, options, style):
    """x of any shape (1 to 4 axes of 1 to 4); with ``r["zeros"]`` at least one ``x == 0``."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    x = array(draw, st, shape, r["values"], r.get("dtype", np.float64))
    if r.get("zeros"):
        x.flat[draw(st.integers(0, x.size - 1))] = 0
    return Case({}, {"x": x}, style)


def linear(draw, st, r, conditions, options, style):
    """minigbp: x (N, I), w (O, I) (PyTorch's layout); CS231n's affine: x (N, d_1, ..., d_k),
    w (d_1 * ... * d_k, M)."""
    N, O = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    dims = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))) if style == "cs231n" \
        else (draw(st.integers(1, 4)),)
    I = math.prod(dims)
    dtype, kind = r.get("dtype", np.float64), r["values"]
    x = array(draw, st, (N,) + dims, kind, dtype)
    w = array(draw, st, (I, O) if style == "cs231n" else (O, I), kind, dtype)
    return Case({}, {"x": x, "w": w, "b": array(draw, st, (O,), kind, dtype)}, style)


def batchnorm(draw, st, r, conditions, options, style):
    """x (N, C, H, W); running mean and variance (positive), gamma, beta (C,)."""
    N, C, H, W = (draw(st.integers(1, 2)) for _ in range(4))
    dtype, kind = r.get("dtype", np.float64), r["values"]
    var = np.array(draw(st.lists(st.integers(1, 4), min_size=C, max_size=C)), dtype=np.float64) / 4
    inputs = {"x": array(draw, st, (N, C, H, W), kind, dtype), "mean": array(draw, st, (C,), kind, dtype),
              "var": var.astype(dtype), "gamma": array(draw, st, (C,), kind, dtype),
              "beta": array(draw, st, (C,), kind, dtype)}
    return Case({}, inputs, style)
