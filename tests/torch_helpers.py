"""Shared test helpers: minigbp -> torch conversion, torch oracles, hypothesis strategies.

Nothing here imports torch at module level, so ``test_naive_vs_fast.py`` can use the
strategies on a checkout without torch; the torch functions import it when called
(test modules that need torch call ``pytest.importorskip("torch")`` first).

The strategies the torch tests use (:func:`maxpool_cases`, :func:`avgpool_cases`,
:func:`broken_pool_cases`, :func:`relu_cases`, :func:`softmax_cases`, :func:`networks`)
are also drawn by ``test_strategy_coverage.py``,
which asserts how often each hard case (ties that change the route, padding, overlapping
windows, ceil-mode edge windows, divisors that ``count_include_pad`` changes, signals that
are not all zero) occurs, so that the coverage of these strategies cannot decay unnoticed.
"""

import functools

import numpy as np
import pytest
from hypothesis import event, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigbp as mg

# ----------------------------------------------------------------------------- values

#: kinds of array contents a strategy can ask for:
#: "int"  small integers (exact arithmetic: ties in pooling windows, exact zeros at ReLUs)
#: "cont" standard normal (no ties, no zeros)
#: ("special", for max pooling only: integers mixed with -inf and NaN)
VALUE_KINDS = ("int", "cont")


def fill(rng, shape, kind, dtype=np.float64):
    """A new array of ``shape`` with contents of ``kind`` (see :data:`VALUE_KINDS`)."""
    if kind == "int":
        a = rng.integers(-3, 4, size=shape).astype(np.float64)
    elif kind == "cont":
        a = rng.standard_normal(shape)
    elif kind == "special":
        a = rng.choice(np.array([-np.inf, -np.inf, np.nan, -2.0, -1.0, 0.0, 1.0, 1.0]), size=shape)
    else:
        raise ValueError(kind)
    return np.ascontiguousarray(a, dtype=dtype)


@st.composite
def rngs(draw):
    """A numpy Generator seeded by hypothesis (reproducible under the derandomized ci profile)."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    note(f"numpy rng seed {seed}")
    return np.random.default_rng(seed)


#: entries of hypothesis-drawn integer arrays, in shrinking order (hypothesis shrinks each
#: entry towards the first value): exact zeros at ReLUs, ties in pooling windows
INT_VALUES = (0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0)
#: the same without 0 (backward seeds: a zero seed would hide the route it takes)
NONZERO_INT_VALUES = INT_VALUES[1:]
#: max pooling's "special" contents: integers mixed with -inf and NaN (the multiset of :func:`fill`)
SPECIAL_VALUES = (0.0, 1.0, -1.0, -np.inf, np.nan, 1.0, -2.0, -np.inf)


@st.composite
def int_arrays(draw, shape, values=INT_VALUES, sparse=True, cycle=None):
    """A float64 array of ``shape`` whose entries hypothesis draws itself from ``values``.

    Unlike :func:`fill` with a seeded generator, hypothesis controls every entry, so it can
    aim for and shrink towards ties and zeros:

    * about one draw in four (unless ``sparse=False``; the branch hypothesis shrinks towards)
      is ``hypothesis.extra.numpy.arrays``' sparse form: a constant background (shrinking to
      ``values[0]``) with a few entries set -- windows full of ties, all-zero arrays;
    * the others are dense, one byte per entry (cheap even for a thousand entries): entry
      ``i`` is ``values[(b_i + o_i) % len(values)]`` with a fixed pseudo-random offset
      ``o_i``, so each entry is hypothesis's to set, but its most frequent dense draw (all
      bytes 0: about a third of the dense draws in these composite strategies) is a fixed
      irregular array, not one more constant array (a network whose filters are all the
      same passes almost no signal; a ReLU input without signs tells no rules apart);
      ``cycle=k`` makes the offsets ``o_i = k + i``, so that draw runs through ``values``
      from ``values[k]`` (with :data:`INT_VALUES`: zero, positive and negative entries even
      in tiny arrays).
    """
    shape = tuple(int(n) for n in shape)
    size = int(np.prod(shape))
    if sparse and size and draw(_st(st.integers, 0, 3)) == 0:
        return draw(_sparse_arrays(shape, tuple(values)))
    offsets = _offsets(size, len(values)) if cycle is None else np.arange(cycle, cycle + size)
    index = np.frombuffer(draw(_bytes(size)), dtype=np.uint8).astype(np.int64) + offsets
    return np.asarray(values, dtype=np.float64)[index % len(values)].reshape(shape)


@functools.lru_cache(maxsize=None)
def _st(factory, *args):
    """``factory(*args)``, one object per arguments: hypothesis validates every new strategy
    object on its first draw, which made the network strategy (~80 draws, a dozen arrays per
    example) a good part of its tests' run time."""
    return factory(*args)


@functools.lru_cache(maxsize=None)
def _bytes(size):
    return st.binary(min_size=size, max_size=size)


@functools.lru_cache(maxsize=None)
def _sparse_arrays(shape, values):
    return hnp.arrays(np.float64, shape, elements=st.sampled_from(values))


@functools.lru_cache(maxsize=None)
def _offsets(size, n):
    """The fixed pseudo-random offsets of the dense :func:`int_arrays`."""
    offsets = np.random.default_rng(size).integers(0, n, size)
    offsets.flags.writeable = False
    return offsets


def int_or_pair(lo, hi):
    """An int in ``[lo, hi]`` or a tuple of two such ints (torch accepts both)."""
    one = st.integers(lo, hi)
    return st.one_of(one, st.tuples(one, one))


def as_pair(v):
    """``v`` as a tuple ``(h, w)`` (the test's own reading, independent of minigbp.shapes)."""
    return (v, v) if isinstance(v, int) else tuple(v)


# -------------------------------------------------------------- configuration strategies
# Each draws a dict of hyperparameters, sizes, a value kind and a seeded rng. About one
# draw in five carries a deliberately invalid hyperparameter ("broken"), and small inputs
# make some configurations too small; both sides must then reject it.

BREAKS = (None,) * 14 + ("stride", "padding", "dilation", "kernel")


def broken_value(draw, what):
    """An invalid hyperparameter (torch must reject it; so must minigbp)."""
    return draw(st.sampled_from({
        "stride": [0, (1, 0), (0, 2)],
        "padding": [-1, (0, -1)],
        "dilation": [0, (1, 0)],
        "kernel": [0, (2, 0)],
    }[what]))


@st.composite
def conv_cases(draw):
    """Conv2d: groups 1-3, channels per group 1-2, kernel/stride 1-3, padding 0-2,
    dilation 1-2 (ints or pairs), bias on/off, H, W 1-8; keys of ``mg.Conv2d``'s arguments
    plus ``xc``, the input's channel count (differs from ``cin`` in "channels" draws)."""
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    c = dict(
        N=draw(st.integers(1, 2)), H=draw(st.integers(1, 8)), W=draw(st.integers(1, 8)),
        cin=cin, cout=cout, groups=groups, xc=cin,
        kernel=draw(int_or_pair(1, 3)), stride=draw(int_or_pair(1, 3)),
        padding=draw(int_or_pair(0, 2)), dilation=draw(int_or_pair(1, 2)),
        bias=draw(st.booleans()), kind=draw(st.sampled_from(VALUE_KINDS)), rng=draw(rngs()),
    )
    broken = draw(st.sampled_from(BREAKS + ("groups", "channels")))
    if broken == "groups":  # channels not divisible by groups
        if groups > 1:
            c[draw(st.sampled_from(("cin", "cout")))] += 1
        else:
            c["groups"] = 0
        c["xc"] = c["cin"]
    elif broken == "channels":  # input channels differ from in_channels
        c["xc"] = cin + 1
    elif broken is not None:
        c[broken] = broken_value(draw, broken)
    return c


@st.composite
def pool_cases(draw, dilated):
    """Max pooling (``dilated=True``: dilation 1-3, -inf/NaN contents) or average pooling:
    kernel/stride 1-3 (stride None too), padding up to K//2, ceil_mode, count_include_pad.

    Draw-then-check (some draws are invalid, both sides must reject them), contents from
    ``rng``; used by ``test_naive_vs_fast.py``. The torch tests use :func:`maxpool_cases`,
    :func:`avgpool_cases` (valid, built so the hard cases are frequent) and
    :func:`broken_pool_cases` instead."""
    kernel = draw(int_or_pair(1, 3))
    K = as_pair(kernel)
    # valid padding per axis (<= K//2); "padding_big" below breaks it on purpose
    padding = draw(st.one_of(st.integers(0, min(K) // 2),
                             st.tuples(st.integers(0, K[0] // 2), st.integers(0, K[1] // 2))))
    c = dict(
        N=draw(st.integers(1, 2)), C=draw(st.integers(1, 2)),
        H=draw(st.integers(1, 8)), W=draw(st.integers(1, 8)),
        kernel=kernel, stride=draw(st.one_of(st.none(), int_or_pair(1, 3))), padding=padding,
        dilation=draw(st.one_of(st.sampled_from([1, 1, 2, 3]), st.tuples(st.integers(1, 3), st.integers(1, 3))))
        if dilated else 1,
        ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
        kind=draw(st.sampled_from(("int", "cont", "special") if dilated else ("int", "cont"))),
        rng=draw(rngs()),
    )
    if dilated and draw(st.sampled_from((False,) * 5 + (True,))):
        # a tiny input with a dilated kernel: windows that miss the input entirely
        c.update(H=draw(st.integers(1, 2)), W=draw(st.integers(1, 2)), dilation=draw(st.integers(2, 3)))
    broken = draw(st.sampled_from(BREAKS[:-1] + (("dilation",) if dilated else ()) + ("padding_big",)))
    if broken == "padding_big":
        axis = draw(st.integers(0, 1))
        P = list(as_pair(padding))
        P[axis] = K[axis] // 2 + 1
        c["padding"] = tuple(P)
    elif broken is not None:
        c[broken] = broken_value(draw, broken)
    return c


@st.composite
def adaptive_cases(draw):
    """Adaptive average pooling: output sizes 1-8 (ints, pairs, ``None`` entries) on 1-7 inputs."""
    size = st.integers(1, 8)  # may exceed the input: bins then repeat input cells
    return dict(
        N=draw(st.integers(1, 2)), C=draw(st.integers(1, 3)),
        H=draw(st.integers(1, 7)), W=draw(st.integers(1, 7)),
        output_size=draw(st.one_of(size, st.tuples(st.one_of(st.none(), size), st.one_of(st.none(), size)))),
        kind=draw(st.sampled_from(VALUE_KINDS)), rng=draw(rngs()),
    )


# ----------------------------------------------------- pooling: valid configurations, built
# The test's own (torch's) size formulas, used to build valid configurations directly
# instead of drawing and discarding, and by the network strategy.

def conv_size(n, k, s, p, d):
    """Convolution output size along one axis (torch's formula)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_size(n, k, s, p, d, ceil):
    """Pooling output size along one axis (torch's rule: in ceil mode a last window that would
    start in the right padding, at ``>= n + p``, is dropped)."""
    span = n + 2 * p - d * (k - 1) - 1
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


def _one_or_pair(draw, pair):
    """``pair`` as drawn arguments are written: an int when both entries agree (one draw in
    two), else the tuple."""
    return pair[0] if pair[0] == pair[1] and draw(_st(st.booleans)) else tuple(pair)


def _pool_axis_sizes(w, k, s, p, d, ceil):
    """Input sizes along one axis for ``w`` whole windows (more if needed to make the size
    positive) plus a remainder ``r``, ``|r| < s`` (``r >= 0`` in floor mode); and those of
    them that leave a ceil-mode edge window."""
    while True:
        # in ceil mode a negative remainder gives inputs shorter than the padded kernel whose one
        # window runs past the input (torch accepts them)
        remainders = range(-(s - 1) if ceil else 0, s)
        sizes = [n for n in ((w - 1) * s + r + d * (k - 1) + 1 - 2 * p for r in remainders) if n >= 1]
        if sizes:
            return sizes, [n for n in sizes if pool_size(n, k, s, p, d, True) > pool_size(n, k, s, p, d, False)]
        w += 1


@st.composite
def pool_geometry(draw, dilated):
    """A valid pooling geometry, built per axis so the hard cases are frequent:

    * kernel K 1-3 (2 and 3 twice as often as 1), dilation D 1-3 (max pooling only; 1 in
      three draws of five), stride S 1-3 (1 twice as often) or ``None`` (= K, one draw in
      five): S < K, or a multiple of D below the kernel's extent, makes windows overlap;
    * padding P in 0..K//2 (torch's limit), K//2 twice as often as 0, so P > 0 in two draws
      in three wherever K > 1;
    * the input size from the windows: ``n = (w - 1) S + r + D (K - 1) + 1 - 2P`` with
      ``w`` 1-3 whole windows (1 in one draw of five; more if needed for ``n >= 1``: the
      output is never empty) and
      a remainder ``|r| < S`` that ceil mode turns into an edge window (torch drops it again
      if it would start in the right padding; ``r < 0``, ceil mode only, makes the input
      shorter than the padded kernel); in ceil mode one axis takes a remainder that leaves
      an edge window (if the stride is 1 on both axes, one axis gets a stride of 2-3 first);
    * with dilation, one draw in twelve has an axis whose windows can miss the input
      altogether (K = 2, P = 1, D = 2-3 and ``n = D - 1``: taps at -1 and ``D - 1``).

    Returns a dict: ``kernel``, ``stride``, ``padding``, ``dilation`` as the layers take them
    (ints or pairs), ``ceil_mode``, ``H``, ``W``, ``out_hw`` (torch's output size), and the
    per-axis pairs ``K``, ``S``, ``P``, ``D``.
    """
    K = [draw(_st(st.sampled_from, (1, 2, 2, 3, 3))) for _ in "hw"]
    D = [draw(_st(st.sampled_from, (1, 1, 1, 2, 3))) for _ in "hw"] if dilated else [1, 1]
    stride_none = draw(_st(st.integers, 0, 4)) == 0
    S = None if stride_none else [draw(_st(st.sampled_from, (1, 1, 2, 3))) for _ in "hw"]
    P = [draw(_st(st.sampled_from, (0, k // 2, k // 2))) for k in K]
    ceil = draw(_st(st.booleans))
    miss = dilated and draw(_st(st.integers, 0, 11)) == 0
    if miss:
        a = draw(_st(st.integers, 0, 1))
        K[a], P[a], D[a] = 2, 1, draw(_st(st.integers, 2, 3))
    S = list(K) if stride_none else S
    windows = [draw(_st(st.sampled_from, (2, 1, 2, 3, 3))) for _ in K]  # 1 in five: a single window
    choices = [_pool_axis_sizes(w, k, s, p, d, ceil) for w, k, s, p, d in zip(windows, K, S, P, D)]
    if ceil and not stride_none and not (choices[0][1] or choices[1][1]):
        # stride 1 on both axes: no remainder, no edge window; a stride of 2-3 on one axis
        b = draw(_st(st.integers, 0, 1))
        S[b] = draw(_st(st.integers, 2, 3))
        choices[b] = _pool_axis_sizes(windows[b], K[b], S[b], P[b], D[b], ceil)
    # ceil mode: an edge window on one axis (drawn) wherever a remainder allows one
    edge_axis = draw(st.sampled_from([a for a in (0, 1) if choices[a][1]] or [None])) if ceil else None
    sizes = [draw(st.sampled_from(edge if a == edge_axis else ns)) for a, (ns, edge) in enumerate(choices)]
    if miss:
        sizes[a] = D[a] - 1
    K, S, P, D = tuple(K), tuple(S), tuple(P), tuple(D)
    out_hw = tuple(pool_size(n, k, s, p, d, ceil) for n, k, s, p, d in zip(sizes, K, S, P, D))
    assert min(out_hw) >= 1
    return dict(
        kernel=_one_or_pair(draw, K), stride=None if stride_none else _one_or_pair(draw, S),
        padding=_one_or_pair(draw, P), dilation=_one_or_pair(draw, D) if dilated else 1,
        ceil_mode=ceil, H=sizes[0], W=sizes[1], out_hw=out_hw, K=K, S=S, P=P, D=D,
    )


def _contents(draw, rng, shape, kind, seed=False):
    """Input (``seed=False``) or backward seed contents of ``kind``: hypothesis-drawn integers
    ("int"; seeds without 0), integers with -inf/NaN ("special"; its seeds are integers), or
    standard normal values from ``rng`` ("cont": no ties, no zeros)."""
    if kind == "cont":
        return rng.standard_normal(shape)
    if seed:
        return draw(int_arrays(shape, NONZERO_INT_VALUES))
    return draw(int_arrays(shape, SPECIAL_VALUES if kind == "special" else INT_VALUES))


@st.composite
def maxpool_cases(draw):
    """Max pooling, always valid (:func:`pool_geometry` with dilation), N, C 1-2; contents
    "int" (ties) or "special" (-inf, NaN; each two draws in five) or "cont"; ``x`` and the seed ``dout``
    (shaped like torch's output) drawn here, ``rng`` kept for "cont"."""
    c = draw(pool_geometry(dilated=True))
    c.update(N=draw(_st(st.integers, 1, 2)), C=draw(_st(st.integers, 1, 2)),
             kind=draw(_st(st.sampled_from, ("int", "int", "special", "special", "cont"))), rng=draw(rngs()))
    c["x"] = _contents(draw, c["rng"], (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    c["dout"] = _contents(draw, c["rng"], (c["N"], c["C"]) + c["out_hw"], c["kind"], seed=True)
    return c


@st.composite
def avgpool_cases(draw):
    """Average pooling, always valid (:func:`pool_geometry` without dilation), N, C 1-2,
    ``count_include_pad`` on/off; contents "int" or "cont"; ``x`` and ``dout`` drawn here."""
    c = draw(pool_geometry(dilated=False))
    c.update(N=draw(_st(st.integers, 1, 2)), C=draw(_st(st.integers, 1, 2)),
             count_include_pad=draw(_st(st.booleans)), kind=draw(st.sampled_from(VALUE_KINDS)),
             rng=draw(rngs()))
    c["x"] = _contents(draw, c["rng"], (c["N"], c["C"], c["H"], c["W"]), c["kind"])
    c["dout"] = _contents(draw, c["rng"], (c["N"], c["C"]) + c["out_hw"], c["kind"], seed=True)
    return c


@st.composite
def broken_pool_cases(draw, dilated):
    """A pooling configuration torch rejects, built from a valid one with one thing broken: a
    zero stride, a negative padding, a zero dilation (max pooling), a zero kernel, padding
    above K//2, or an input smaller than the (dilated) kernel even with its padding."""
    c = draw(pool_geometry(dilated))
    c.update(N=draw(_st(st.integers, 1, 2)), C=draw(_st(st.integers, 1, 2)),
             count_include_pad=draw(_st(st.booleans)))
    what = draw(st.sampled_from(("stride", "padding", "kernel", "padding_big", "too_small")
                                + (("dilation",) if dilated else ())))
    axis = draw(_st(st.integers, 0, 1))
    if what == "padding_big":
        P = list(c["P"])
        P[axis] = c["K"][axis] // 2 + 1
        c["padding"] = tuple(P)
    elif what == "too_small":  # no window fits: n + 2P < D (K - 1) + 1 (ceil mode: by a stride)
        K, P, d = list(c["K"]), list(c["P"]), c["D"][axis]
        if d * (K[axis] - 1) - 2 * P[axis] < 1:
            K[axis], P[axis] = 3, 0
        s = K[axis] if c["stride"] is None else c["S"][axis]
        small = range(1, d * (K[axis] - 1) - 2 * P[axis] + 1)
        if not [n for n in small if pool_size(n, K[axis], s, P[axis], d, c["ceil_mode"]) < 1]:
            c["ceil_mode"] = False  # ceil mode keeps a window that starts in the input
        small = [n for n in small if pool_size(n, K[axis], s, P[axis], d, c["ceil_mode"]) < 1]
        n = draw(st.sampled_from(small))
        c.update(kernel=tuple(K), padding=tuple(P), **{"HW"[axis]: n})
    else:
        c[what] = broken_value(draw, what)
    c.update(broken=what, dilated=dilated)
    event(f"broken: {what}")
    c["x"] = np.zeros((c["N"], c["C"], c["H"], c["W"]))  # the contents do not matter
    return c


@st.composite
def relu_cases(draw):
    """ReLU: 1-4 dims of size 1-4; ``x`` and ``dout`` "int" (hypothesis-drawn: exact zeros in
    ``x``, two draws in three; negative and zero seeds, never constant) or "cont" (from ``rng``),
    independently."""
    ndim = draw(_st(st.integers, 1, 4))
    c = dict(shape=tuple(draw(st.lists(_st(st.integers, 1, 4), min_size=ndim, max_size=ndim))),
             kind=draw(_st(st.sampled_from, ("int", "int", "cont"))),
             dout_kind=draw(st.sampled_from(VALUE_KINDS)), rng=draw(rngs()))
    # the dense draws hypothesis makes most often (all bytes 0) are x = (0, 1, -1, 2, -2, 3, -3, ...)
    # and dout = (2, -2, 3, -3, 0, 1, -1, ...): two entries already tell the three rules apart
    c["x"] = (c["rng"].standard_normal(c["shape"]) if c["kind"] == "cont"
              else draw(int_arrays(c["shape"], cycle=0)))
    c["dout"] = (c["rng"].standard_normal(c["shape"]) if c["dout_kind"] == "cont"
                 else draw(int_arrays(c["shape"], sparse=False, cycle=3)))
    return c


@st.composite
def softmax_cases(draw):
    """Softmax over 1-4 dims of size 1-4, ``dim`` in ``[-ndim - 1, ndim]`` (the ends are out of
    range: both sides reject them); contents hypothesis-drawn integers (tied logits, a seed that
    is 0 or the same at every class) or normal values times 3 (no ties)."""
    ndim = draw(_st(st.integers, 1, 4))
    shape = tuple(draw(st.lists(_st(st.integers, 1, 4), min_size=ndim, max_size=ndim)))
    kind, rng = draw(st.sampled_from(VALUE_KINDS)), draw(rngs())
    return dict(shape=shape, dim=draw(_st(st.integers, -ndim - 1, ndim)), kind=kind, rng=rng,
                x=draw(int_arrays(shape)) if kind == "int" else 3 * rng.standard_normal(shape),
                dout=draw(int_arrays(shape)) if kind == "int" else rng.standard_normal(shape))


# --------------------------------------------------------------------- geometry helpers

def empty_windows_1d(size, n_out, kernel, stride, padding, dilation):
    """Boolean (n_out,): output positions whose taps ``o*S - P + k*D`` all miss ``[0, size)``.

    Dilated max pooling can have such windows (e.g. size 1, kernel 2, dilation 2,
    padding 1: taps at -1 and 1). torch's CPU kernel records an out-of-range index
    for them and its backward writes out of bounds, so the torch oracle must not run
    backward through them.
    """
    o = np.arange(n_out)[:, None]
    taps = o * stride - padding + np.arange(kernel)[None, :] * dilation
    return ~((taps >= 0) & (taps < size)).any(axis=1)


def empty_window_mask(x_shape, out_hw, kernel, stride, padding, dilation):
    """Boolean (Ho, Wo): windows with no tap inside the input."""
    (H, W), (Ho, Wo) = x_shape[2:], out_hw
    stride = kernel if stride is None else stride
    K, S, P, D = (as_pair(v) for v in (kernel, stride, padding, dilation))
    rows = empty_windows_1d(H, Ho, K[0], S[0], P[0], D[0])
    cols = empty_windows_1d(W, Wo, K[1], S[1], P[1], D[1])
    return rows[:, None] | cols[None, :]


# --------------------------------------------------------------------------- networks

#: int networks: inputs (all of -3..3, but shrinking towards 1: an all-zero input would make
#: a network whose signal is zero), weights (never 0: an all-zero filter kills the signal),
#: biases
NET_X_VALUES = (1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.0)
NET_W_VALUES = (1.0, -1.0, 2.0, -2.0)
NET_B_VALUES = (0.0, 1.0, -1.0, 2.0, -2.0)


def adaptive_bin_sizes(n, m):
    """Sizes of the ``m`` adaptive-pooling bins over ``n`` cells (torch's rule)."""
    return [-(-((i + 1) * n) // m) - (i * n) // m for i in range(m)]


POW2 = {1, 2, 4, 8, 16}


def _draw_params(draw, rng, layer, kind):
    """Float64 parameters: hypothesis-drawn integers ("int": weights +-1, +-2, biases -2..2) or
    He-scaled normals from ``rng`` ("cont")."""
    if kind == "int":
        # dense: a constant weight array makes every filter the same, and the signal cancels
        # (a softmax's seed sums to zero)
        layer.weight = draw(int_arrays(layer.weight.shape, NET_W_VALUES, sparse=False))
        if layer.bias is not None:
            layer.bias = draw(int_arrays(layer.bias.shape, NET_B_VALUES))
    else:
        layer.weight = rng.standard_normal(layer.weight.shape) * np.sqrt(2.0 / layer.weight[0].size)
        if layer.bias is not None:
            layer.bias = rng.standard_normal(layer.bias.shape) * 0.1


def _keep_alive(layer, h, kind):
    """Before a ReLU: make every output channel of ``layer`` positive somewhere on the batch
    ``h`` (a channel that is never positive passes no signal in vanilla and guided mode).

    A dead channel's bias is lowered past its upper quartile, so that the channel's largest
    values pass: "int", by an integer (the network stays exact, and the values at the new
    threshold are exact zeros on both sides); "cont", to halfway between two of the
    channel's distinct values (a threshold *at* a value would leave a pre-activation that
    is zero only up to roundoff, whose ReLU mask then depends on the summation order).
    Without a bias the filter is negated, which helps when some value was negative.
    """
    out = layer.forward(h)[0]
    values = np.moveaxis(out, 1, 0).reshape(out.shape[1], -1)
    for ch in np.flatnonzero(values.max(axis=1) <= 0):
        v = values[ch]
        if layer.bias is None:
            if v.min() < 0:
                layer.weight[ch] = -layer.weight[ch]
            continue
        if kind == "int":
            t = min(np.floor(np.quantile(v, 0.75)), v.max() - 1)
        else:
            u = np.unique(v)
            if len(u) == 1:
                t = u[0] - 0.5 * (abs(u[0]) + 1)
            else:
                i = min(int(0.75 * (len(u) - 1)), len(u) - 2)
                t = (u[i] + u[i + 1]) / 2
        layer.bias[ch] -= t


#: the network's pooling strides: the kernel (``None``) in half the draws
_POOL_STRIDES = st.one_of(st.none(), st.sampled_from([(1, 1), (2, 2), (1, 2)]))


@st.composite
def networks(draw, kinds=("int", "cont"), softmax=False):
    """``(model, x, n_classes)``: a random valid float64 network and an input batch.

    2-5 blocks (conv [+ relu] [+ max/avg pool] [+ dropout], every hyperparameter drawn), then
    adaptive average pooling (sizes that need not divide the feature map, ``None`` entries),
    flatten, linear, relu, [dropout], linear [, ``Softmax(dim=1)`` if ``softmax``]; laid out
    flat, as ``features``/``avgpool``/``classifier`` or one ``Sequential`` per block.

    "int" draws: inputs, weights and biases are hypothesis-drawn small integers (so
    hypothesis shrinks them) and every divisor is a power of two, so both libraries compute
    exactly: ReLUs see exact zeros and max pools ties. "cont": normal values from a seeded
    generator.

    Drawn so that the signal is rarely all zero (an all-zero map cannot tell the modes or a
    broken kernel apart): the batch runs forward while the network is built and
    :func:`_keep_alive` keeps every channel before a ReLU alive; convolution padding stays
    below the dilated kernel's extent (no output that sees only padding, a sink for the
    signal); every class has a positive weight from some hidden unit. With ``softmax``, no
    hidden unit weighs every class alike (the softmax's seed at the logits sums to zero, so
    such a unit would pass nothing back) and the last linear layer is scaled by a power of two
    (exact) so that no sample's logits spread over more than 4, away from saturation, where
    the softmax's gradient is a difference of nearly equal numbers.
    """
    kind = draw(_st(st.sampled_from, tuple(kinds)))
    rng = draw(rngs())
    N, C = draw(_st(st.integers, 1, 3)), draw(_st(st.integers, 1, 3))
    H, W = draw(_st(st.integers, 5, 11)), draw(_st(st.integers, 5, 11))
    x = draw(int_arrays((N, C, H, W), NET_X_VALUES)) if kind == "int" else rng.standard_normal((N, C, H, W))
    act, c = x, C  # the batch through the layers built so far
    blocks = []
    for _ in range(draw(_st(st.integers, 2, 5))):
        block = []
        h, w = act.shape[2:]
        # convolution (falls back to 1x1 if the drawn one does not fit the feature map)
        cout = draw(_st(st.integers, 1, 4))
        groups = draw(_st(st.sampled_from, tuple(g for g in (1, 2, 3) if c % g == 0 and cout % g == 0)))
        k = (draw(_st(st.integers, 1, 3)), draw(_st(st.integers, 1, 3)))
        s = draw(_st(st.sampled_from, ((1, 1), (1, 1), (2, 2), (1, 2))))
        d = draw(_st(st.sampled_from, ((1, 1), (1, 1), (2, 1), (2, 2))))
        # up to K//2 + 1, but below the extent D (K - 1) + 1: every output sees the input
        p = tuple(draw(_st(st.integers, 0, min(k[a] // 2 + 1, d[a] * (k[a] - 1)))) for a in (0, 1))
        if conv_size(h, k[0], s[0], p[0], d[0]) < 1 or conv_size(w, k[1], s[1], p[1], d[1]) < 1:
            k, s, p, d = (1, 1), (1, 1), (0, 0), (1, 1)
        conv = mg.Conv2d(c, cout, k, s, p, d, groups, bias=draw(_st(st.booleans)))
        _draw_params(draw, rng, conv, kind)
        relu = draw(_st(st.sampled_from, (True, True, True, False)))
        if relu:
            _keep_alive(conv, act, kind)
        block.append(conv)
        act, c = conv.forward(act)[0], cout
        if relu:
            block.append(mg.ReLU())
            act = np.maximum(act, 0)
        h, w = act.shape[2:]
        pool = draw(_st(st.sampled_from, ("max", "max", "avg", None)))
        if pool is not None:
            kmax = 2 if (pool == "avg" and kind == "int") else 3  # int draws: power-of-two divisors
            pk = (draw(_st(st.integers, 1, kmax)), draw(_st(st.integers, 1, kmax)))
            ps = draw(_POOL_STRIDES)
            pp = (draw(_st(st.integers, 0, pk[0] // 2)), draw(_st(st.integers, 0, pk[1] // 2)))
            pd = draw(_st(st.sampled_from, ((1, 1), (1, 1), (2, 1)))) if pool == "max" else (1, 1)
            ceil = draw(_st(st.booleans))
            S = pk if ps is None else ps
            ph, pw = (pool_size(n, pk[a], S[a], pp[a], pd[a], ceil) for a, n in enumerate((h, w)))
            # no windows that miss the input entirely (torch's backward writes out of bounds
            # there, see test_ops_vs_torch.test_maxpool_window_entirely_outside_the_input)
            if ph >= 1 and pw >= 1 and not empty_window_mask((1, 1, h, w), (ph, pw), pk, S, pp, pd).any():
                if pool == "max":
                    layer = mg.MaxPool2d(pk, ps, pp, pd, ceil_mode=ceil)
                else:
                    layer = mg.AvgPool2d(pk, ps, pp, ceil_mode=ceil, count_include_pad=draw(_st(st.booleans)))
                block.append(layer)
                act = layer.forward(act)[0]
        if draw(_st(st.sampled_from, (False,) * 5 + (True,))):
            block.append(mg.Dropout(0.3))
        blocks.append(block)

    # adaptive pooling: sizes that need not divide (int draws: power-of-two bins only)
    h, w = act.shape[2:]

    def sizes(n):
        ok = [m for m in range(1, 5) if kind == "cont" or set(adaptive_bin_sizes(n, m)) <= POW2]
        return _st(st.sampled_from, tuple(ok) + (None,))
    out_hw = (draw(sizes(h)), draw(sizes(w)))
    out_hw = out_hw if draw(_st(st.booleans)) or None in out_hw or out_hw[0] != out_hw[1] else out_hw[0]
    adaptive = mg.AdaptiveAvgPool2d(out_hw)
    act = mg.Flatten()(adaptive(act))
    hidden, classes = draw(_st(st.integers, 2, 6)), draw(_st(st.integers, 2, 5))
    lin1, lin2 = mg.Linear(act.shape[1], hidden, bias=draw(_st(st.booleans))), mg.Linear(hidden, classes)
    _draw_params(draw, rng, lin1, kind)
    _draw_params(draw, rng, lin2, kind)
    _keep_alive(lin1, act, kind)
    if softmax:
        # the softmax's seed at the logits sums to zero: a hidden unit that weighs every class
        # alike passes nothing back, so every such column gets one weight negated
        for col in np.flatnonzero((lin2.weight == lin2.weight[:1]).all(axis=0)):
            row = draw(_st(st.integers, 0, classes - 1))
            lin2.weight[row, col] = -lin2.weight[row, col]
    for row in np.flatnonzero(~(lin2.weight > 0).any(axis=1)):  # every class has a positive weight
        j = draw(_st(st.integers, 0, hidden - 1))
        lin2.weight[row, j] = -lin2.weight[row, j]
    head = [adaptive, mg.Flatten(), lin1, mg.ReLU()]
    if draw(_st(st.booleans)):
        head.append(mg.Dropout(0.5))
    head.append(lin2)
    if softmax:
        logits = lin2(np.maximum(lin1(act), 0))
        spread = float((logits.max(axis=1) - logits.min(axis=1)).max())
        if spread > 4:
            scale = 2.0 ** -int(np.ceil(np.log2(spread / 4)))
            lin2.weight = lin2.weight * scale
            lin2.bias = lin2.bias * scale
        head.append(mg.Softmax(dim=1))

    layout = draw(_st(st.sampled_from, ("flat", "named", "nested")))
    if layout == "flat":
        model = mg.Sequential(*[layer for b in blocks for layer in b], *head)
    elif layout == "named":
        model = mg.Sequential(features=mg.Sequential(*[layer for b in blocks for layer in b]),
                              avgpool=head[0], classifier=mg.Sequential(*head[1:]))
    else:  # one positional Sequential per block, the head flat
        model = mg.Sequential(*[mg.Sequential(*b) for b in blocks], *head)
    event(f"{kind} values, {layout} layout")
    note(repr(model))
    return model, x, classes


# -------------------------------------------------------------------- minigbp -> torch

def _torch():
    import torch
    return torch


@pytest.fixture(autouse=True, scope="module")
def torch_single_thread():
    """Run torch single-threaded in the importing module, restore afterwards.

    The tensors here are tiny: extra threads only add synchronization, and on a busy
    2-core machine torch's OpenMP workers spin and wait, which made these modules
    several times slower (10 s vs 50 s measured). Import it into a test module to use it.
    """
    torch = _torch()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _param(torch, arr, dtype):
    return torch.nn.Parameter(torch.from_numpy(np.array(arr, dtype=np.float64)).to(dtype))


def to_torch(model, dtype=None):
    """An equivalent ``torch.nn`` module (float64 by default, eval mode) with the same weights.

    A minigbp ``Sequential`` (nested too) becomes a ``torch.nn.Sequential`` whose children
    carry the same names, so dotted names and ``state_dict`` keys agree. Every ReLU becomes
    its own non-inplace ``nn.ReLU`` module (Captum hooks modules), Dropout is the identity
    because the module is returned in eval mode, Softmax keeps its ``dim``.
    """
    torch = _torch()
    nn = torch.nn
    dtype = torch.float64 if dtype is None else dtype
    m = model
    if isinstance(m, mg.Sequential):
        t = nn.Sequential()
        for name, child in m.children.items():
            t.add_module(name, to_torch(child, dtype))
    elif isinstance(m, mg.Conv2d):
        t = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                      padding=m.padding, dilation=m.dilation, groups=m.groups,
                      bias=m.bias is not None, dtype=dtype)
        t.weight = _param(torch, m.weight, dtype)
        if m.bias is not None:
            t.bias = _param(torch, m.bias, dtype)
    elif isinstance(m, mg.Linear):
        t = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=dtype)
        t.weight = _param(torch, m.weight, dtype)
        if m.bias is not None:
            t.bias = _param(torch, m.bias, dtype)
    elif isinstance(m, mg.ReLU):
        t = nn.ReLU()
    elif isinstance(m, mg.MaxPool2d):
        t = nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode)
    elif isinstance(m, mg.AvgPool2d):
        t = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode,
                         count_include_pad=m.count_include_pad)
    elif isinstance(m, mg.AdaptiveAvgPool2d):
        t = nn.AdaptiveAvgPool2d(m.output_size)
    elif isinstance(m, mg.Flatten):
        t = nn.Flatten(m.start_dim, m.end_dim)
    elif isinstance(m, mg.Dropout):
        t = nn.Dropout(m.p)
    elif isinstance(m, mg.Softmax):
        t = nn.Softmax(dim=m.dim)
    else:
        raise TypeError(f"to_torch: no torch equivalent for {m!r}")
    return t.eval()


def truncated(tmodel, upto):
    """The torch counterpart of ``minigbp.Sequential.forward(x, upto=...)``.

    ``upto`` is a dotted leaf name ("features.3") or a container ("features"); the
    result is a (nested) ``nn.Sequential`` sharing modules with ``tmodel`` and ending
    with that layer.
    """
    torch = _torch()
    head, _, rest = upto.partition(".")
    out = torch.nn.Sequential()
    for name, child in tmodel.named_children():
        if name == head:
            out.add_module(name, truncated(child, rest) if rest else child)
            return out
        out.add_module(name, child)
    raise KeyError(upto)


def relu_rule_backprop(tmodel, x, seed, mode):
    """Signal at the input of ``tmodel`` for ``seed`` at its output, Captum's ReLU rules.

    Full backward hooks on every ``nn.ReLU`` module replace the gradient each ReLU sends
    down, element by element (``R`` is the gradient arriving from above, ``x`` the
    ReLU's forward input):

    * vanilla:   no hook (autograd: ``R * (x > 0)``);
    * guided:    ``clamp(R, min=0) * (x > 0)``  (Captum ``GuidedBackprop``);
    * deconvnet: ``clamp(R, min=0)``            (Captum ``Deconvolution``; ``x`` ignored).

    Returns a numpy array shaped like ``x``.
    """
    torch = _torch()
    inputs, handles = {}, []

    def fwd_hook(module, args, out):
        inputs[module] = args[0].detach()

    def bwd_hook(module, grad_input, grad_output):
        r = grad_output[0].clamp(min=0)
        if mode == "guided":
            r = r * (inputs[module] > 0).to(r.dtype)
        return (r,)

    if mode != "vanilla":
        for m in tmodel.modules():
            if isinstance(m, torch.nn.ReLU):
                handles.append(m.register_forward_hook(fwd_hook))
                handles.append(m.register_full_backward_hook(bwd_hook))
    try:
        tx = torch.tensor(x, requires_grad=True)
        out = tmodel(tx)
        out.backward(torch.as_tensor(seed, dtype=out.dtype))
        return tx.grad.numpy()
    finally:
        for h in handles:
            h.remove()


def assert_close(got, want, tol, scale=None, what=""):
    """``max |got - want| <= tol * max(1, scale)``; ``scale`` defaults to ``max |want|``.

    Also checks shape and that both are NaN at the same places (NaN compares equal).
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_g, nan_w), f"{what}: NaN at different places\n{got}\n{want}"
    g, w = got[~nan_g], want[~nan_w]
    inf = np.isinf(w) | np.isinf(g)
    assert np.array_equal(g[inf], w[inf]), f"{what}: infinities differ\n{got}\n{want}"
    g, w = g[~inf], w[~inf]
    if scale is None:
        scale = float(np.max(np.abs(w))) if w.size else 0.0
    err = float(np.max(np.abs(g - w))) if g.size else 0.0
    assert err <= tol * max(1.0, scale), f"{what}: max abs error {err:.3g} > {tol:g} * max(1, {scale:.3g})"


# ------------------------------------------------------------------------ graphs

def every_relu(mode):
    """A context manager under which *every* ReLU of a torch model follows ``mode``: ``torch.relu``
    and ``torch.relu_`` are replaced by an autograd Function with the rule (``nn.ReLU`` modules and
    ``F.relu`` call them, in place or not), as TorchRay patches them, but blocking at ``x == 0``:

    * guided:    ``clamp(R, min=0) * (x > 0)``;
    * deconvnet: ``clamp(R, min=0)``.

    The oracle for "the mode at every ReLU", module or function (Captum's hooks see modules only).
    """
    import contextlib

    torch = _torch()

    class Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, r):
            (x,) = ctx.saved_tensors
            r = r.clamp(min=0)
            return r * (x > 0).to(r.dtype) if mode == "guided" else r

    @contextlib.contextmanager
    def patched():
        saved = torch.relu, torch.relu_
        torch.relu = torch.relu_ = Rule.apply
        try:
            yield
        finally:
            torch.relu, torch.relu_ = saved

    return patched()


def randomize_batchnorm(module, seed=0, exact=False):
    """Give every ``nn.BatchNorm2d`` of ``module`` non-trivial statistics and affine parameters.

    ``exact``: small integers for mean, weight and bias and ``running_var = 4 - eps`` (so that
    ``var + eps == 4`` exactly and the scale ``weight / 2`` is exact): integer inputs then stay
    exactly representable through the normalization, ties and zeros included.
    """
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                if exact:
                    assert (4.0 - m.eps) + m.eps == 4.0
                    m.running_mean.copy_(torch.randint(-2, 3, (n,), generator=g))
                    m.running_var.fill_(4.0 - m.eps)
                    m.weight.copy_(torch.randint(-2, 3, (n,), generator=g))
                    m.bias.copy_(torch.randint(-2, 3, (n,), generator=g))
                else:
                    m.running_mean.copy_(torch.rand(n, generator=g, dtype=torch.float64) - 0.5)
                    m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
                    m.weight.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g, dtype=torch.float64) * 0.4 - 0.2)
    return module


def autograd_signal(tmodel, x, seed):
    """``d (seed . tmodel(x)) / dx`` by torch autograd, as a numpy array."""
    torch = _torch()
    tx = torch.tensor(x, requires_grad=True)
    out = tmodel(tx)
    out.backward(torch.as_tensor(seed, dtype=out.dtype))
    return tx.grad.numpy()
