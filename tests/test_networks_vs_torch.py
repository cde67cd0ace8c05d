"""Whole random networks against torch float64: autograd (vanilla) and Captum (guided, deconvnet).

Hypothesis draws a stack of 2-5 blocks (conv [+ relu] [+ max/avg pool], every
hyperparameter drawn), then adaptive average pooling (sizes that need not divide the
feature map, ``None`` entries), flatten, linear, relu, [dropout], linear; sometimes as
nested ``Sequential``s (``features``/``classifier`` or positional), sometimes with dropout
in the feature stack. ``to_torch`` builds the float64 twin with the same weights.

In "int" draws inputs, weights and biases are small integers and every divisor (average
pooling windows, adaptive bins) is a power of two, so both libraries compute exactly:
ReLUs see exact zeros (``x == 0`` must block) and max pools see ties (first wins) with
no roundoff to hide a disagreement. "cont" draws use normal values.

Tolerance: :data:`TOL` relative to the signal scale (max |signal| of both sides).
"""

import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import minigbp as mg  # noqa: E402
from torch_helpers import empty_window_mask, relu_rule_backprop, rngs, to_torch, truncated  # noqa: E402
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


# ----------------------------------------------------------------------- size formulas
# the test's own (torch's) formulas, used only to keep drawn networks valid

def conv_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_size(n, k, s, p, d, ceil):
    span = n + 2 * p - d * (k - 1) - 1
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


def adaptive_bin_sizes(n, m):
    return [-(-((i + 1) * n) // m) - (i * n) // m for i in range(m)]


POW2 = {1, 2, 4, 8, 16}


# --------------------------------------------------------------------------- strategy

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


@st.composite
def networks(draw, kinds=("int", "cont")):
    """``(model, x, n_classes)``: a random valid float64 network and an input batch."""
    kind = draw(st.sampled_from(kinds))
    rng = draw(rngs())
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(5, 11)), draw(st.integers(5, 11))
    x = (rng.integers(-3, 4, (N, C, H, W)).astype(np.float64) if kind == "int"
         else rng.standard_normal((N, C, H, W)))
    h, w, c = H, W, C
    blocks = []
    for _ in range(draw(st.integers(2, 5))):
        block = []
        # convolution (falls back to 1x1 if the drawn one does not fit the feature map)
        cout = draw(st.integers(1, 4))
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0 and cout % g == 0]))
        k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        s = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2)]))
        d = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (2, 2)]))
        p = (draw(st.integers(0, k[0] // 2 + 1)), draw(st.integers(0, k[1] // 2 + 1)))
        if conv_size(h, k[0], s[0], p[0], d[0]) < 1 or conv_size(w, k[1], s[1], p[1], d[1]) < 1:
            k, s, p, d = (1, 1), (1, 1), (0, 0), (1, 1)
        conv = mg.Conv2d(c, cout, k, s, p, d, groups, bias=draw(st.booleans()))
        _weights(rng, conv, kind)
        block.append(conv)
        h, w, c = conv_size(h, k[0], s[0], p[0], d[0]), conv_size(w, k[1], s[1], p[1], d[1]), cout
        if draw(st.sampled_from([True, True, True, False])):
            block.append(mg.ReLU())
        pool = draw(st.sampled_from(["max", "max", "avg", None]))
        if pool is not None:
            kmax = 2 if (pool == "avg" and kind == "int") else 3  # int draws: power-of-two divisors
            pk = (draw(st.integers(1, kmax)), draw(st.integers(1, kmax)))
            ps = draw(st.one_of(st.none(), st.sampled_from([(1, 1), (2, 2), (1, 2)])))
            pp = (draw(st.integers(0, pk[0] // 2)), draw(st.integers(0, pk[1] // 2)))
            pd = draw(st.sampled_from([(1, 1), (1, 1), (2, 1)])) if pool == "max" else (1, 1)
            ceil = draw(st.booleans())
            S = pk if ps is None else ps
            ph, pw = (pool_size(h, pk[0], S[0], pp[0], pd[0], ceil), pool_size(w, pk[1], S[1], pp[1], pd[1], ceil))
            # no windows that miss the input entirely (torch's backward writes out of bounds
            # there, see test_ops_vs_torch.test_maxpool_window_entirely_outside_the_input)
            if ph >= 1 and pw >= 1 and not empty_window_mask((1, 1, h, w), (ph, pw), pk, S, pp, pd).any():
                if pool == "max":
                    block.append(mg.MaxPool2d(pk, ps, pp, pd, ceil_mode=ceil))
                else:
                    block.append(mg.AvgPool2d(pk, ps, pp, ceil_mode=ceil,
                                              count_include_pad=draw(st.booleans())))
                h, w = ph, pw
        if draw(st.sampled_from([False] * 5 + [True])):
            block.append(mg.Dropout(0.3))
        blocks.append(block)

    # adaptive pooling: sizes that need not divide (int draws: power-of-two bins only)
    def sizes(n):
        ok = [m for m in range(1, 5) if kind == "cont" or set(adaptive_bin_sizes(n, m)) <= POW2]
        return st.sampled_from(ok + [None])
    out_hw = (draw(sizes(h)), draw(sizes(w)))
    out_hw = out_hw if draw(st.booleans()) or None in out_hw or out_hw[0] != out_hw[1] else out_hw[0]
    oh, ow = (out_hw, out_hw) if isinstance(out_hw, int) else out_hw
    oh, ow = h if oh is None else oh, w if ow is None else ow
    hidden, classes = draw(st.integers(2, 6)), draw(st.integers(2, 5))
    lin1, lin2 = mg.Linear(c * oh * ow, hidden, bias=draw(st.booleans())), mg.Linear(hidden, classes)
    _weights(rng, lin1, kind)
    _weights(rng, lin2, kind)
    head = [mg.AdaptiveAvgPool2d(out_hw), mg.Flatten(), lin1, mg.ReLU()]
    if draw(st.booleans()):
        head.append(mg.Dropout(0.5))
    head.append(lin2)

    layout = draw(st.sampled_from(["flat", "named", "nested"]))
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
    for mode in MODES:
        got = mg.backprop(model, x, t, mode=mode)
        assert got.shape == x.shape and got.dtype == np.float64
        if mode == "vanilla":
            want = torch_vanilla(tmodel, x, one_hot(len(x), classes, t))
        else:
            want = captum(mode, tmodel, x, t)
            # the hook oracle used by the seed/layer tests below agrees with Captum
            assert_signal_close(relu_rule_backprop(tmodel, x, one_hot(len(x), classes, t), mode), want,
                                what=f"hook oracle vs Captum ({mode})")
        assert_signal_close(got, want, what=mode)
    np.testing.assert_array_equal(x, x0)  # the input is never modified


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


@given(networks(), rngs(), st.sampled_from(["int", "cont"]))
def test_seed_arrays(net, rng, seed_kind):
    model, x, classes = net
    seed = (rng.integers(-2, 3, (len(x), classes)).astype(np.float64) if seed_kind == "int"
            else rng.standard_normal((len(x), classes)))
    seed0 = seed.copy()
    tmodel = to_torch(model)
    for mode in MODES:
        got = mg.backprop(model, x, seed, mode=mode)
        want = (torch_vanilla(tmodel, x, seed) if mode == "vanilla"
                else relu_rule_backprop(tmodel, x, seed, mode))
        assert_signal_close(got, want, what=mode)
    np.testing.assert_array_equal(seed, seed0)  # the caller's seed is never touched


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
