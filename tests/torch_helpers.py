"""Shared test helpers: minigbp -> torch conversion, torch oracles, hypothesis strategies.

Nothing here imports torch at module level, so ``test_naive_vs_fast.py`` can use the
strategies on a checkout without torch; the torch functions import it when called
(test modules that need torch call ``pytest.importorskip("torch")`` first).
"""

import numpy as np
import pytest
from hypothesis import note
from hypothesis import strategies as st

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
    kernel/stride 1-3 (stride None too), padding up to K//2, ceil_mode, count_include_pad."""
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
    because the module is returned in eval mode.
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
