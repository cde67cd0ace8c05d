"""minigbp.testing: assert_matches for frameworks, and the layer checkers for courses,
which must pass correct student code and catch the classic mistakes with the failing case."""


import numpy as np
import pytest

import minigbp as mg
from minigbp import ops, testing


pytest.importorskip("hypothesis")

# ------------------------------------------------------------ student code, minigbp style
# (the naive ops have exactly the documented signatures)

conv_forward = ops.conv2d_forward_naive
conv_backward = ops.conv2d_backward_naive
pool_forward = ops.maxpool2d_forward_naive
pool_backward = ops.maxpool2d_backward_naive


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache, mode="vanilla"):
    return ops.relu_backward_naive(dout, cache, mode)


def conv_backward_no_flip(dout, cache):
    """A classic mistake: dx as a 'full' convolution of dout with the *unflipped* filters
    (equivalently, scattering the flipped filters)."""
    x, w, b, g = cache
    dx, dw, db = ops.conv2d_backward_naive(dout, cache)
    (S, T), (P, Q) = g.S, g.P
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    dxp = np.zeros((N, C, H + 2 * P, W + 2 * Q))
    for n in range(N):
        for f in range(F):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    dxp[n, :, i * S:i * S + HH, j * T:j * T + WW] += w[f, :, ::-1, ::-1] * dout[n, f, i, j]
    return dxp[:, :, P:P + H, Q:Q + W], dw, db


def pool_forward_zero_pad(x, kernel_size, stride=None, padding=0):
    """Another classic: max pooling over a zero-padded input (wrong for negative inputs)."""
    HH, WW = kernel_size
    S = stride or HH
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (xp.shape[2] - HH) // S + 1, (xp.shape[3] - WW) // S + 1
    out = np.empty(x.shape[:2] + (Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = xp[:, :, i * S:i * S + HH, j * S:j * S + WW].max(axis=(2, 3))
    return out, (x, kernel_size, S, padding)


def pool_backward_all_ties(dout, cache):
    """Routes the signal to *every* maximum of a window (CS231n's mask trick) instead of the first."""
    indices, g = cache[:2]
    N, C, H, W = g.x_shape
    HH, WW = g.K
    S, T = g.S
    x = cache_inputs[id(cache)]
    dx = np.zeros(g.x_shape)
    for i in range(g.Ho):
        for j in range(g.Wo):
            win = x[:, :, i * S:i * S + HH, j * T:j * T + WW]
            mask = win == win.max(axis=(2, 3), keepdims=True)
            dx[:, :, i * S:i * S + HH, j * T:j * T + WW] += mask * dout[:, :, i:i + 1, j:j + 1]
    return dx


cache_inputs = {}


def pool_forward_remembering(x, kernel_size, stride=None):
    out, cache = ops.maxpool2d_forward(x, kernel_size, stride)
    cache_inputs[id(cache)] = x
    return out, cache


def relu_backward_at_zero(dout, cache):
    return dout * (cache >= 0)


def relu_backward_in_place(dout, cache):
    dout[cache <= 0] = 0
    return dout


# ---------------------------------------------------------------- student code, CS231n style

def conv_forward_cs231n(x, w, b, conv_param):
    S, P = conv_param["stride"], conv_param["pad"]
    out, cache = ops.conv2d_forward_naive(x, w, b, S, P)
    return out, cache


def conv_backward_cs231n(dout, cache):
    return ops.conv2d_backward_naive(dout, cache)


def max_pool_forward_cs231n(x, pool_param):
    HH, WW, S = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    Ho, Wo = (H - HH) // S + 1, (W - WW) // S + 1
    out = np.empty((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * S:i * S + HH, j * S:j * S + WW].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_cs231n(dout, cache):
    x, pool_param = cache
    HH, WW, S = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    win = x[n, c, i * S:i * S + HH, j * S:j * S + WW]
                    r, s = np.unravel_index(np.argmax(win), win.shape)  # the first maximum
                    dx[n, c, i * S + r, j * S + s] += dout[n, c, i, j]
    return dx


# --------------------------------------------------------------------- correct code passes

def test_correct_conv_passes_with_dilation_and_groups():
    testing.check_conv_forward(conv_forward, dilation=True, groups=True)
    testing.check_conv_backward(conv_forward, conv_backward, dilation=True, groups=True)


def test_correct_maxpool_passes_with_padding_dilation_and_ceil_mode():
    testing.check_maxpool_forward(pool_forward, dilation=True, ceil_mode=True)
    testing.check_maxpool_backward(pool_forward, pool_backward, dilation=True, ceil_mode=True)


def test_correct_relu_passes_in_every_mode():
    testing.check_relu_forward(relu_forward)
    testing.check_relu_forward(lambda x: np.maximum(x, 0))          # forward may return out alone
    testing.check_relu_backward(relu_forward, relu_backward)
    testing.check_relu_backward(relu_forward, relu_backward, modes=mg.MODES)


def test_cs231n_signatures_are_detected_and_pass():
    testing.check_conv_forward(conv_forward_cs231n)
    testing.check_conv_backward(conv_forward_cs231n, conv_backward_cs231n)
    testing.check_maxpool_forward(max_pool_forward_cs231n)
    testing.check_maxpool_backward(max_pool_forward_cs231n, max_pool_backward_cs231n)


# ---------------------------------------------------------------------- mistakes are caught

def test_conv_backward_without_the_flip_fails_with_the_case():
    with pytest.raises(AssertionError) as e:
        testing.check_conv_backward(conv_forward, conv_backward_no_flip)
    msg = str(e.value)
    assert msg.startswith("conv backward: dx differs from minigbp's")
    for words in ("case: x.shape=(", "w.shape=(", "stride=", "padding=", "expected dx (minigbp) =", "got dx ="):
        assert words in msg


def test_zero_padded_maxpool_fails_on_negative_inputs():
    with pytest.raises(AssertionError) as e:
        testing.check_maxpool_forward(pool_forward_zero_pad)
    msg = str(e.value)
    assert msg.startswith("maxpool forward: out differs from minigbp's")
    case = msg.splitlines()[1]
    assert "padding=0" not in case  # the failing case pads
    x = np.array(eval(msg.split("x =\n", 1)[1].split("\nexpected", 1)[0]))
    assert (x < 0).any()


def test_maxpool_backward_to_every_tied_maximum_fails():
    with pytest.raises(AssertionError, match="maxpool backward: dx differs"):
        testing.check_maxpool_backward(pool_forward_remembering, pool_backward_all_ties, padding=False)


def test_relu_backward_letting_the_signal_through_at_zero_fails():
    with pytest.raises(AssertionError, match=r"relu backward \(vanilla\): dx differs"):
        testing.check_relu_backward(relu_forward, relu_backward_at_zero)


def test_backward_writing_into_dout_fails():
    with pytest.raises(AssertionError, match="modified its input argument 0 in place"):
        testing.check_relu_backward(relu_forward, relu_backward_in_place)


def test_backward_check_needs_a_cache():
    with pytest.raises(AssertionError, match=r"must return \(out, cache\)"):
        testing.check_relu_backward(lambda x: np.maximum(x, 0), relu_backward)


def test_a_raising_student_function_reports_the_case():
    def broken(x, w, b, stride=1, padding=0):
        raise IndexError("oops")

    with pytest.raises(AssertionError, match="conv forward: raised IndexError: oops"):
        testing.check_conv_forward(broken, max_examples=5)


# ------------------------------------------------------------------------- assert_matches

@pytest.fixture(scope="module")
def recipes():
    torch = pytest.importorskip("torch")
    pytest.importorskip("captum")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    from example_scripts import load_example

    yield load_example("verify_recipes.py", "verify_recipes_for_helpers")
    torch.set_num_threads(before)


def test_assert_matches_passes_a_correct_implementation(recipes):
    report = testing.assert_matches(recipes.make_model(), recipes.captum_guided, mode="guided")
    assert report.ok and report.verdict == "guided"
    testing.assert_matches(recipes.make_model(), recipes.captum_deconvolution, mode="deconvnet", batch=2)


def test_assert_matches_names_the_mode_matched_instead(recipes):
    with pytest.raises(AssertionError) as e:
        testing.assert_matches(recipes.make_model(), recipes.relu_function_forward_mask, mode="guided")
    msg = str(e.value)
    assert msg.startswith("relu_function_ForwardMaskReLU does not compute minigbp's 'guided' mode: "
                          "it matches 'vanilla' instead")
    assert "verdict: vanilla" in msg  # followed by the full report


def test_assert_matches_none_names_where_it_diverges(recipes):
    with pytest.raises(AssertionError, match="it matches none of vanilla, deconvnet and guided; against guided "
                                             "it first diverges at classifier.4"):
        testing.assert_matches(recipes.make_model(), recipes.hook_features_only)


def test_assert_matches_reports_a_failing_function(recipes):
    with pytest.raises(AssertionError, match="it failed: RuntimeError"):
        testing.assert_matches(recipes.make_model_inplace(), recipes.hook_recipe)


def test_assert_matches_rejects_unknown_modes(recipes):
    with pytest.raises(ValueError, match="unknown mode"):
        testing.assert_matches(recipes.make_model(), recipes.captum_guided, mode="smoothgrad")
