"""The convention switches (minigbp.conventions) on hand-computed cases with integer data.

relu_at_zero, relu_scope, pool_ties, seed; the Softmax layer; mg.postprocess; presets and
explicit switches; error messages; the ``minigbp compat`` CLI.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigbp as mg
from minigbp.cli import main
from minigbp.targets import as_target
from minigbp.ops.pool import (maxpool2d_backward, maxpool2d_backward_naive, maxpool2d_forward,
                              maxpool2d_forward_naive)
from minigbp.conventions import in_scope, rules_at
from minigbp.ops.relu import relu_backward, relu_backward_naive
from minigbp.presets import PRESETS

# ------------------------------------------------------------------------ relu_at_zero

X = np.array([0.0, 0.0, 1.0, -1.0, 2.0])
R = np.array([1.0, -1.0, 2.0, 3.0, 0.0])
EXPECTED = {  # hand-computed: [x > 0] / [x >= 0], [R > 0]
    ("vanilla", "block"): [0, 0, 2, 0, 0],
    ("vanilla", "pass"): [1, -1, 2, 0, 0],
    ("guided", "block"): [0, 0, 2, 0, 0],
    ("guided", "pass"): [1, 0, 2, 0, 0],
    ("deconvnet", "block"): [1, 0, 2, 3, 0],
    ("deconvnet", "pass"): [1, 0, 2, 3, 0],
}


@pytest.mark.parametrize("mode,at_zero", sorted(EXPECTED))
@pytest.mark.parametrize("fn", [relu_backward, relu_backward_naive])
def test_relu_at_zero(fn, mode, at_zero):
    got = fn(R.copy(), X.copy(), mode, at_zero)
    assert np.array_equal(got, EXPECTED[mode, at_zero]) and got.dtype == R.dtype


def zero_net():
    """h = relu(x0 - x1) with x = (1, 1): exactly 0; y = (h, -h). Seed at y0 -> R = 1 > 0 at h."""
    m = mg.Sequential(mg.Linear(2, 1, bias=False), mg.ReLU(), mg.Linear(1, 2, bias=False))
    m[0].weight = np.array([[1.0, -1.0]])
    m[2].weight = np.array([[1.0], [-1.0]])
    return m, np.array([[1.0, 1.0]])


@pytest.mark.parametrize("mode", ["vanilla", "guided", "deconvnet"])
def test_relu_at_zero_through_backprop(mode):
    m, x = zero_net()
    block = mg.backprop(m, x, 0, mode)
    passed = mg.backprop(m, x, 0, mode, relu_at_zero="pass")
    assert np.array_equal(passed, [[1.0, -1.0]])  # R = 1 passes in every mode
    assert np.array_equal(block, [[1.0, -1.0]] if mode == "deconvnet" else [[0.0, 0.0]])
    assert np.array_equal(mg.backprop(m, x, 0, mode, relu_at_zero="block"), block)  # the default
    # seed at y1: R = -1 at h: blocked by guided and deconvnet whatever the switch; vanilla "pass" lets it
    want = [[-1.0, 1.0]] if mode == "vanilla" else [[0.0, 0.0]]
    assert np.array_equal(mg.backprop(m, x, 1, mode, relu_at_zero="pass"), want)


# -------------------------------------------------------------------------- relu_scope

def test_scope_outside_is_plain_autograd_and_matches_segments():
    """Outside relu_scope a ReLU is what an unhooked ReLU is: vanilla with [x > 0], even
    when relu_at_zero="pass" applies inside the scope."""
    model = mg.Sequential(features=mg.Sequential(mg.ReLU()), classifier=mg.Sequential(mg.ReLU()))
    x = np.array([[0.0, 0.0]])
    seed = np.ones((1, 2))
    assert np.array_equal(mg.backprop(model, x, seed, "guided", relu_scope="features.*", relu_at_zero="pass"),
                          [[0.0, 0.0]])  # classifier.0 is out of scope: blocks at 0
    assert np.array_equal(mg.backprop(model, x, seed, "guided", relu_scope="*.*", relu_at_zero="pass"),
                          [[1.0, 1.0]])
    # segment by segment: "features.*" is the direct children of features only
    assert not in_scope("features.block.3", "features.*")
    assert in_scope("features.block.3", "features.*.*")


def mode_at(name, mode, scope=None, layer=None, functional_relu="mode"):
    rules = mg.Conventions(relu_scope=scope, functional_relu=functional_relu)
    return rules_at(name, layer or mg.ReLU(), mode, rules)[0]


def test_mode_at():
    assert mode_at("features.1", "guided") == "guided"  # None: every ReLU
    assert mode_at("classifier.1", "guided") == "guided"
    assert mode_at("features.1", "guided", "features.*") == "guided"
    assert mode_at("classifier.1", "guided", "features.*") == "vanilla"
    assert mode_at("features.1", "deconvnet", "classifier.?") == "vanilla"
    assert mode_at("features.12", "deconvnet", "features.1") == "vanilla"  # whole-name match


def test_functional_relus_follow_the_mode_unless_told_otherwise():
    functional = mg.ReLU(functional=True)
    assert mode_at("relu", "guided", layer=functional) == "guided"
    assert mode_at("relu", "guided", layer=functional, functional_relu="vanilla") == "vanilla"
    assert mode_at("relu", "deconvnet", layer=mg.ReLU(), functional_relu="vanilla") == "deconvnet"
    # both switches: a module ReLU outside the scope is vanilla too
    assert mode_at("classifier.1", "guided", "features.*", functional_relu="vanilla") == "vanilla"


def scoped_net():
    """features: x -> relu(x); classifier: relu(W x) with W = [[1, 1], [1, -1]], then y = V h.
    x = (1, 2): features pass it; classifier pre-activations (3, -1) -> h = (3, 0).
    V = [[-1, 1]] so the signal at h is (-1, 1): negative where the ReLU is on."""
    m = mg.Sequential(features=mg.Sequential(mg.ReLU()),
                      classifier=mg.Sequential(mg.Linear(2, 2, bias=False), mg.ReLU(),
                                               mg.Linear(2, 1, bias=False)))
    m["classifier"][0].weight = np.array([[1.0, 1.0], [1.0, -1.0]])
    m["classifier"][2].weight = np.array([[-1.0, 1.0]])
    return m, np.array([[1.0, 2.0]])


def test_relu_scope():
    m, x = scoped_net()
    # vanilla: R at h = (-1, 1) * [pre > 0] = (-1, 0) -> W^T: (-1, -1); features ReLU passes (x > 0)
    vanilla = mg.backprop(m, x, 0, "vanilla")
    assert np.array_equal(vanilla, [[-1.0, -1.0]])
    # guided everywhere (the default None): (-1, 1) -> [R > 0] and [pre > 0] -> (0, 0)
    assert np.array_equal(mg.backprop(m, x, 0, "guided"), [[0.0, 0.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "guided", relu_scope=None), [[0.0, 0.0]])
    # guided only in features: the classifier's ReLU acts as vanilla -> (-1, -1) reaches the features
    # ReLU, where guided blocks the negative signal
    assert np.array_equal(mg.backprop(m, x, 0, "guided", relu_scope="features.*"), [[0.0, 0.0]])
    # guided only in the classifier: (0, 0) already there
    assert np.array_equal(mg.backprop(m, x, 0, "guided", relu_scope="classifier.*"), [[0.0, 0.0]])
    # deconvnet only in features: the classifier is vanilla (-1, -1), the features ReLU drops both
    assert np.array_equal(mg.backprop(m, x, 0, "deconvnet", relu_scope="features.*"), [[0.0, 0.0]])
    # a pattern matching nothing: vanilla everywhere
    assert np.array_equal(mg.backprop(m, x, 0, "guided", relu_scope="nothing"), vanilla)
    # with V = [[1, 1]]: R at h = (1, 1); vanilla at the classifier keeps (1, 0) -> W^T (1, 1);
    # deconvnet in the classifier keeps (1, 1) -> W^T (2, 0)
    m["classifier"][2].weight = np.array([[1.0, 1.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "deconvnet", relu_scope="features.*"), [[1.0, 1.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "deconvnet", relu_scope="classifier.*"), [[2.0, 0.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "deconvnet"), [[2.0, 0.0]])


# --------------------------------------------------------------------------- pool_ties

def pool(x, ties, dout=None, fast=True, **kw):
    kw = {"kernel_size": 2, **kw}
    fwd, bwd = (maxpool2d_forward, maxpool2d_backward) if fast else (maxpool2d_forward_naive,
                                                                       maxpool2d_backward_naive)
    out, cache = fwd(x, **kw)
    return out, bwd(np.ones_like(out) * 6 if dout is None else dout, cache, ties)


@pytest.mark.parametrize("fast", [True, False])
def test_pool_ties_three_tied(fast):
    x = np.array([[[[3.0, 3.0], [1.0, 3.0]]]])  # three maxima in window order (0,0), (0,1), (1,1)
    assert np.array_equal(pool(x, "first", fast=fast)[1], [[[[6, 0], [0, 0]]]])
    assert np.array_equal(pool(x, "last", fast=fast)[1], [[[[0, 0], [0, 6]]]])
    assert np.array_equal(pool(x, "split", fast=fast)[1], [[[[2, 2], [0, 2]]]])


@pytest.mark.parametrize("fast", [True, False])
def test_pool_ties_two_tied_overlapping(fast):
    # 1x4, kernel (1, 2), stride 1: windows [2,2], [2,0], [0,0]; each sends 6
    x = np.array([[[[2.0, 2.0, 0.0, 0.0]]]])
    kw = dict(kernel_size=(1, 2), stride=1)
    assert np.array_equal(pool(x, "first", fast=fast, **kw)[1], [[[[6, 6, 6, 0]]]])
    assert np.array_equal(pool(x, "last", fast=fast, **kw)[1], [[[[0, 12, 0, 6]]]])
    assert np.array_equal(pool(x, "split", fast=fast, **kw)[1], [[[[3, 9, 3, 3]]]])


@pytest.mark.parametrize("ties", ["first", "last", "split"])
@pytest.mark.parametrize("fast", [True, False])
def test_pool_ties_nan_and_missing_windows_keep_the_switch(ties, fast):
    x = np.array([[[[np.nan, 1.0], [np.nan, 1.0]]]])  # NaN wins; the last NaN is recorded
    out, dx = pool(x, ties, fast=fast)
    assert np.isnan(out).all()
    assert np.array_equal(dx, [[[[0, 0], [6, 0]]]])
    # kernel 2, dilation 3, padding 1 on 2x2: the window's taps are rows/cols -1 and 2, all outside
    x = np.array([[[[5.0, 5.0], [5.0, 5.0]]]])
    out, dx = pool(x, ties, fast=fast, dilation=3, padding=1)
    assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == -np.inf
    assert np.array_equal(dx, np.zeros_like(x))


@st.composite
def pool_draws(draw):
    K = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    S = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    P = (draw(st.integers(0, K[0] // 2)), draw(st.integers(0, K[1] // 2)))
    D = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["int", "special"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    vals = np.array([-1.0, 0.0, 1.0, 1.0]) if kind == "int" else np.array([-np.inf, np.nan, 0.0, 1.0, 1.0])
    x = rng.choice(vals, size=(draw(st.integers(1, 2)), draw(st.integers(1, 2)), H, W))
    return x, dict(kernel_size=K, stride=S, padding=P, dilation=D, ceil_mode=draw(st.booleans())), rng


@given(pool_draws(), st.sampled_from(["first", "last", "split"]))
def test_pool_naive_vs_fast_every_ties(case, ties):
    x, kw, rng = case
    try:
        out, cache = maxpool2d_forward(x, **kw)
    except ValueError:  # the configuration leaves no output window
        with pytest.raises(ValueError):
            maxpool2d_forward_naive(x, **kw)
        return
    out_n, cache_n = maxpool2d_forward_naive(x, **kw)
    np.testing.assert_array_equal(out, out_n)
    dout = rng.integers(-3, 4, out.shape).astype(np.float64)
    np.testing.assert_allclose(maxpool2d_backward(dout, cache, ties), maxpool2d_backward_naive(dout, cache_n, ties),
                               rtol=0, atol=1e-12)
    # every ties value conserves the signal of the windows that hit the input
    hit = cache[0] >= 0
    assert np.isclose(maxpool2d_backward(dout, cache, ties).sum(), dout[hit].sum())


# -------------------------------------------------------------------------------- seed

def test_seed_one_and_value():
    out = np.array([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    assert np.array_equal(as_target(2).seed(out), [[0, 0, 1], [0, 0, 1]])
    assert np.array_equal(as_target(2).seed(out, "value"), [[0, 0, 3], [0, 0, -6]])
    assert np.array_equal(as_target(np.array([1, 0])).seed(out, "value"), [[0, -2, 0], [4, 0, 0]])
    given_seed = np.array([[0.5, 0, 0], [0, 0, 2]])
    assert np.array_equal(as_target(given_seed).seed(out, "value"), given_seed)  # explicit arrays as given
    # through backprop: y = W x, W = [[1, 2], [3, -1]], x = (2, 1) -> y = (4, 5)
    m = mg.Sequential(mg.Linear(2, 2, bias=False))
    m[0].weight = np.array([[1.0, 2.0], [3.0, -1.0]])
    x = np.array([[2.0, 1.0]])
    assert np.array_equal(mg.backprop(m, x, 1, "vanilla"), [[3.0, -1.0]])
    assert np.array_equal(mg.backprop(m, x, 1, "vanilla", seed="value"), [[15.0, -5.0]])
    assert np.array_equal(mg.backprop(m, x, 1, "vanilla", seed="one"), [[3.0, -1.0]])


# ----------------------------------------------------------------------------- Softmax

def test_softmax_vs_torch_and_finite_differences():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for dim, shape in ((1, (3, 5)), (1, (2, 4, 3, 2)), (-1, (2, 3, 4))):
        x = rng.standard_normal(shape) * 3
        dout = rng.standard_normal(shape)
        layer = mg.Softmax(dim)
        s, cache = layer.forward(x)
        dx = layer.backward(dout, cache)
        xt = torch.tensor(x, requires_grad=True)
        st_ = torch.softmax(xt, dim)
        st_.backward(torch.tensor(dout))
        np.testing.assert_allclose(s, st_.detach().numpy(), rtol=0, atol=1e-14)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-14)
        # central differences of <dout, softmax(x)>
        h, num = 1e-6, np.zeros_like(x)
        for i in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[i] = h
            num[i] = ((dout * layer.forward(x + e)[0]).sum() - (dout * layer.forward(x - e)[0]).sum()) / (2 * h)
        np.testing.assert_allclose(dx, num, rtol=0, atol=1e-8)
        # the same in every mode
        for mode in mg.MODES:
            assert np.array_equal(layer.backward(dout, cache, mode), dx)
    # hand case: softmax(0, 0) = (1/2, 1/2); seed (1, 0) -> dx = s * (dout - <dout, s>) = (1/4, -1/4)
    s, cache = mg.Softmax().forward(np.zeros((1, 2)))
    assert np.array_equal(mg.Softmax().backward(np.array([[1.0, 0.0]]), cache), [[0.25, -0.25]])
    # overflow-safe
    s, _ = mg.Softmax().forward(np.array([[1000.0, 1000.0]]))
    assert np.array_equal(s, [[0.5, 0.5]])


# ------------------------------------------------------------------------- postprocess

def test_postprocess_hand_computed():
    s = np.array([[[[1.0, -4.0]], [[-3.0, 2.0]]]])  # (1, 2, 1, 2)
    assert np.array_equal(mg.postprocess(s, "raw"), s)
    assert mg.postprocess(s, "raw") is not s
    assert np.array_equal(mg.postprocess(s, "abs"), np.abs(s))
    assert np.array_equal(mg.postprocess(s, "max-abs"), [[[[3.0, 4.0]]]])
    # max |.| over channels (3, 4) -> min-max per sample: (0, 1)
    assert np.array_equal(mg.postprocess(s, "abs-max-minmax"), [[[[0.0, 1.0]]]])
    # sum |.| over channels (4, 6); p99 of (4, 6) = 4 + 0.99 * 2 = 5.98, min 4:
    # clip((g - 4) / (5.98 - 4), 0, 1) = (0, 1)
    np.testing.assert_allclose(mg.postprocess(s, "sum-abs-p99"), [[[[0.0, 1.0]]]], rtol=0, atol=1e-15)
    # per sample; a constant sample maps to 0 in abs-max-minmax, a zero sample stays 0 in sum-abs-p99
    two = np.concatenate([s, np.zeros_like(s)])
    assert np.array_equal(mg.postprocess(two, "abs-max-minmax")[1], np.zeros((1, 1, 2)))
    assert np.array_equal(mg.postprocess(two, "sum-abs-p99")[1], np.zeros((1, 1, 2)))
    assert mg.postprocess(s.astype(np.float32), "sum-abs-p99").dtype == np.float32
    with pytest.raises(ValueError, match="post-processing 'median'"):
        mg.postprocess(s, "median")
    for p in PRESETS.values():
        mg.postprocess(s, p.postprocess)  # every preset names a known post-processing


# ----------------------------------------------------------------- presets and switches

def test_presets_set_switches_and_explicit_switches_override():
    m, x = zero_net()
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="torchray"), [[1.0, -1.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="torchray", relu_at_zero="block"), [[0.0, 0.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "guided", preset="captum", relu_at_zero="pass"), [[1.0, -1.0]])
    for name in ("captum", "pytorch-grad-cam"):
        assert np.array_equal(mg.backprop(m, x, 0, "guided", preset=name), [[0.0, 0.0]])
    lin = mg.Sequential(mg.Linear(2, 2, bias=False))
    lin[0].weight = np.array([[1.0, 2.0], [3.0, -1.0]])
    xx = np.array([[2.0, 1.0]])
    for name in ("zennit", "innvestigate"):
        assert np.array_equal(mg.backprop(lin, xx, 1, "guided", preset=name), [[15.0, -5.0]])
        assert np.array_equal(mg.backprop(lin, xx, 1, "guided", preset=name, seed="one"), [[3.0, -1.0]])
    sm, sx = scoped_net()
    sm["classifier"][2].weight = np.array([[1.0, 1.0]])
    assert np.array_equal(mg.backprop(sm, sx, 0, "deconvnet", relu_scope="features.*"), [[1.0, 1.0]])
    assert np.array_equal(mg.backprop(sm, sx, 0, "deconvnet", relu_scope=None), [[2.0, 0.0]])
    # a preset refuses a mode its library does not have (or that is not checked)
    with pytest.raises(ValueError, match="preset 'utkuozbulak' covers mode.*guided, not 'deconvnet'"):
        mg.backprop(sm, sx, 0, "deconvnet", preset="utkuozbulak")
    # a convention that a library sets differently in one mode: TorchRay's plain gradient blocks at 0
    assert np.array_equal(mg.backprop(m, x, 0, "vanilla", preset="torchray"), [[0.0, 0.0]])
    assert np.array_equal(mg.backprop(m, x, 0, "vanilla", relu_at_zero="pass"), [[1.0, -1.0]])
    # the resolved switches of every preset
    from minigbp.conventions import resolve
    for name, p in PRESETS.items():
        assert resolve(name) == p.conventions
        assert resolve(name, switches={"pool_ties": "split"}).pool_ties == "split"
        assert resolve(name, switches={"pool_ties": "split"}).seed == p.conventions.seed
    assert resolve() == mg.Conventions()
    assert mg.Conventions() == mg.Conventions("block", None, "first", "one")


@pytest.mark.parametrize("switch,value", [("relu_at_zero", "maybe"), ("pool_ties", "middle"),
                                          ("functional_relu", "guided"),
                                          ("seed", "softmax"), ("relu_scope", ""), ("relu_scope", 3)])
def test_unknown_switch_values_name_the_switch(switch, value):
    m, x = zero_net()
    with pytest.raises(ValueError, match=switch):
        mg.backprop(m, x, 0, "guided", **{switch: value})
    with pytest.raises(ValueError, match=switch):
        mg.Conventions(**{switch: value})


def test_unknown_preset_and_ops_switches():
    m, x = zero_net()
    with pytest.raises(ValueError, match="preset 'keras'.*captum"):
        mg.backprop(m, x, 0, "guided", preset="keras")
    with pytest.raises(ValueError, match="relu_at_zero"):
        relu_backward(R, X, "guided", "maybe")
    with pytest.raises(ValueError, match="pool_ties"):
        pool(np.zeros((1, 1, 2, 2)), "middle")
    with pytest.raises(TypeError):
        mg.backprop(m, x, 0, "guided", relu_zero="pass")


def test_compat_cli_lists_every_preset(capsys):
    assert main(["compat"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["preset", "modes", "switches"] and lines[0].split()[-1] == "postprocess"
    assert max(len(line) for line in lines) <= 100  # readable in a terminal
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == set(PRESETS)
    for name, p in PRESETS.items():
        for switch, value in p.conventions.as_dict().items():
            assert (f"{switch}={value}" in rows[name]) == (value != getattr(mg.Conventions(), switch))
        assert p.postprocess in rows[name] and p.checked not in rows[name]
    # a switch a library sets differently in one mode is shown beside the preset's value
    assert "relu_at_zero=pass (vanilla: block)" in rows["torchray"]
    assert "seed=value (vanilla: one)" in rows["innvestigate"]
    assert "functional_relu=vanilla, upsample=nearest" in rows["captum"]
    assert main(["compat", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert all(p.checked in wide for p in PRESETS.values())


def test_unknown_seed_rule_is_refused():
    out = np.ones((1, 3))
    with pytest.raises(ValueError, match="unknown seed 'values'"):
        as_target(1).seed(out, "values")


def test_softmax_keeps_float32_and_converts_from_torch():
    x = np.array([[1.0, 2.0, 0.5]], np.float32)
    s, cache = mg.Softmax().forward(x)
    assert s.dtype == np.float32 and mg.Softmax().backward(np.ones_like(s), cache).dtype == np.float32
    torch = pytest.importorskip("torch")
    model = mg.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Softmax(dim=1)))
    assert isinstance(model[1], mg.Softmax) and model[1].dim == 1
