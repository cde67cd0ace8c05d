"""Zeiler & Fergus projections: receptive fields against a brute-force impulse test, projections
against backprop with an explicit seed and their receptive fields, ranking and ties, the command."""

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from PIL import Image

import minigbp as mg
from minigbp.cli import main
from minigbp.explain.projection import grid_shape, projections, top_k
from minigbp.explain.receptive import receptive_field


# ------------------------------------------------------------------ receptive fields

def test_digits_receptive_fields_by_hand():
    model = mg.zoo.digits(pretrained=False)
    # conv3 p1: r=3, s=-1; pool2: r=4, j=2; conv3: r=4+2*2=8, s=-1-2=-3; pool2: r=10, j=4; conv3: r=18, s=-7
    expected = {"features.0": (3, 1, -1), "features.1": (3, 1, -1), "features.2": (4, 2, -1),
                "features.4": (8, 2, -3), "features.5": (10, 4, -3), "features.7": (18, 4, -7),
                "features": (22, 8, -7)}
    for layer, (size, jump, start) in expected.items():
        rf = receptive_field(model, layer, (32, 32))
        assert (rf.size, rf.jump, rf.start) == ((size,) * 2, (jump,) * 2, (start,) * 2), layer
    rf = receptive_field(model, "features.7", (1, 1, 32, 32))
    assert rf.output_size == (8, 8) and rf.input_size == (32, 32)
    assert rf.box(0, 0) == ((0, 11), (0, 11))            # [-7, 11) clipped
    assert rf.box(3, 4) == ((5, 23), (9, 27))
    assert rf.box(7, 7) == ((21, 32), (21, 32))          # [21, 39) clipped
    assert rf.box(0, 0, clip=False) == ((-7, 11), (-7, 11))


def layer_strategy():
    k, s, d = st.integers(1, 3), st.integers(1, 2), st.integers(1, 2)

    @st.composite
    def one(draw):
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg"]))
        K = (draw(k), draw(k))
        S = (draw(s), draw(s))
        if kind == "conv":
            D = (draw(d), draw(d))
            P = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
            return ("conv", K, S, P, D)
        P = (draw(st.integers(0, K[0] // 2)), draw(st.integers(0, K[1] // 2)))
        ceil = draw(st.booleans())
        if kind == "max":
            D = (draw(d), draw(d))
            return ("max", K, S, P, D, ceil)
        return ("avg", K, S, P, ceil)

    return one()


def build(specs, relu):
    """A network from layer specs, all weights 1 and biases 0 (so every activation is >= 0 and an
    impulse reaches exactly the units connected to it), 2 channels after the first conv."""
    layers, c = [], 1
    for spec in specs:
        if spec[0] == "conv":
            _, K, S, P, D = spec
            conv = mg.Conv2d(c, 2, K, stride=S, padding=P, dilation=D)
            conv.weight = np.ones_like(conv.weight, dtype=np.float64)
            conv.bias = np.zeros(2)
            layers.append(conv)
            c = 2
        elif spec[0] == "max":
            _, K, S, P, D, ceil = spec
            layers.append(mg.MaxPool2d(K, S, P, D, ceil_mode=ceil))
        else:
            _, K, S, P, ceil = spec
            layers.append(mg.AvgPool2d(K, S, P, ceil_mode=ceil))
        if relu:
            layers += [mg.ReLU(), mg.Dropout()]
    return mg.Sequential(features=mg.Sequential(*layers))


def impulse_support(model, H, W):
    """support[y, x] = the (H, W) input pixels whose unit impulse makes output unit (y, x) non-zero."""
    eye = np.eye(H * W).reshape(H * W, 1, H, W)
    out = np.concatenate([model(eye[i:i + 256]) for i in range(0, H * W, 256)])   # (H*W, C, ho, wo)
    return (out > 0).any(axis=1).reshape(H, W, *out.shape[2:]).transpose(2, 3, 0, 1)


@given(st.lists(layer_strategy(), min_size=1, max_size=3), st.booleans(), st.integers(0, 5), st.integers(0, 5))
def test_receptive_field_equals_impulse_response(specs, relu, extra_h, extra_w):
    model = build(specs, relu)
    rf0 = receptive_field(model, "features")
    H, W = (rf0.size[a] + 2 * rf0.jump[a] + (extra_h, extra_w)[a] for a in range(2))
    try:
        rf = receptive_field(model, "features", (H, W))
    except ValueError:
        assume(False)  # input too small for this net
    support = impulse_support(model, H, W)
    assert support.shape[:2] == rf.output_size
    ho, wo = rf.output_size
    for y in range(ho):
        for x in range(wo):
            rows, cols = rf.footprint(y, x)
            # the exact footprint is the impulse support, pixel for pixel
            np.testing.assert_array_equal(support[y, x], rows[:, None] & cols[None, :], err_msg=f"unit {y, x}")
            # the clipped box contains it
            (r0, r1), (c0, c1) = rf.box(y, x)
            inside = np.zeros((H, W), bool)
            inside[r0:r1, c0:c1] = True
            assert not (support[y, x] & ~inside).any(), f"unit {y, x}: support outside its box"
    # size, start and jump: units whose closed-form box lies inside the input, away from the far
    # edge (where floor-mode rounding drops pixels), span exactly it; adjacent ones are `jump` apart
    for a, n in enumerate(rf.output_size):
        units = [u for u in range(n // 2 + 1)
                 if rf.start[a] + u * rf.jump[a] >= 0 and rf.start[a] + u * rf.jump[a] + rf.size[a] <= (H, W)[a]]
        spans = {}
        for u in units:
            prof = support[u, :].any(axis=(0, 2)) if a == 0 else support[:, u].any(axis=(0, 1))
            hit = np.flatnonzero(prof)
            spans[u] = (hit[0], hit[-1] + 1)
            assert spans[u] == (rf.start[a] + u * rf.jump[a], rf.start[a] + u * rf.jump[a] + rf.size[a]), (a, u)
        for u in units:
            if u + 1 in spans:
                assert spans[u + 1][0] - spans[u][0] == rf.jump[a]


def test_impulse_test_sees_something():
    """The property test above is not vacuous: this net has interior units on both axes."""
    model = build([("conv", (3, 2), (2, 1), (1, 0), (2, 1)), ("max", (3, 3), (2, 2), (1, 1), (1, 2), True)], True)
    rf = receptive_field(model, "features", (20, 15))
    # rows: conv r = 1 + 2*2 = 5, j = 2, s = -1; pool r = 5 + 2*2 = 9, j = 4, s = -1 - 2 = -3
    # cols: conv r = 2, j = 1, s = 0; pool (dilation 2) r = 2 + 2*2*1 = 6, j = 2, s = -1
    assert rf.size == (9, 6) and rf.jump == (4, 2) and rf.start == (-3, -1)
    support = impulse_support(model, 20, 15)
    rows, cols = np.nonzero(support[2, 3])
    assert (rows.min(), rows.max() + 1) == rf.box(2, 3)[0] == (5, 14)
    assert (cols.min(), cols.max() + 1) == rf.box(2, 3)[1] == (5, 11)
    assert sorted(set(rows)) == [5, 7, 9, 11, 13]       # the dilated conv leaves holes


@pytest.mark.parametrize("layer, culprit", [("flatten", "flatten"), ("classifier.0", "flatten"),
                                            ("classifier", "flatten")])
def test_receptive_field_refuses_layers_that_mix_positions(layer, culprit):
    with pytest.raises(ValueError, match=f"layer '{culprit}' \\(Flatten\\).*whole input.*'{layer}'"):
        receptive_field(mg.zoo.digits(pretrained=False), layer)


def test_receptive_field_errors():
    model = mg.Sequential(mg.Conv2d(1, 2, 3), mg.AdaptiveAvgPool2d(2), mg.Conv2d(2, 2, 1))
    with pytest.raises(ValueError, match=r"layer '1' \(AdaptiveAvgPool2d\) mixes all spatial positions"):
        receptive_field(model, "2")
    assert receptive_field(model, "0").size == (3, 3)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        receptive_field(model, "nope")
    with pytest.raises(ValueError, match="too small"):
        receptive_field(model, "0", (2, 2))
    rf = receptive_field(model, "0", (5, 5))
    with pytest.raises(ValueError, match="y=3 out of range"):
        rf.box(3, 0)
    with pytest.raises(ValueError, match="needs the input size"):
        receptive_field(model, "0").footprint(0, 0)


# ---------------------------------------------------------------------- projections

@pytest.fixture(scope="module")
def digits():
    images = mg.zoo.digits_test_data()[0]
    return mg.zoo.digits(), mg.zoo.digits_preprocess(images[:60]).astype(np.float64)


@pytest.mark.parametrize("mode", mg.MODES)
@pytest.mark.parametrize("layer", ["features.1", "features.4", "features.7"])
def test_projection_is_backprop_of_one_unit_and_zero_outside_its_receptive_field(digits, mode, layer):
    model, x = digits
    rf = receptive_field(model, layer, x.shape)
    res = projections(model, x, layer, 5, k=4, mode=mode)
    res_one = projections(model, x, layer, 5, k=4, mode=mode, seed="one")
    assert len(res) == 4
    for p, q in zip(res, res_one):
        assert (p.image, p.y, p.x) == (q.image, q.y, q.x)
        seed = np.zeros(model.forward(x[:1], upto=layer)[0].shape)
        seed[0, 5, p.y, p.x] = 1
        ref = mg.backprop(model, x[p.image:p.image + 1], target=seed, mode=mode, layer=layer)[0]
        np.testing.assert_allclose(q.signal, ref, rtol=0, atol=1e-12)
        np.testing.assert_allclose(p.signal, p.activation * ref, rtol=1e-12, atol=1e-12)
        assert np.abs(ref).max() > 0
        (r0, r1), (c0, c1) = p.box
        assert p.box == rf.box(p.y, p.x)
        outside = np.ones(p.signal.shape[1:], bool)
        outside[r0:r1, c0:c1] = False
        assert not p.signal[:, outside].any(), "projection leaks outside the receptive field"
        rows, cols = rf.footprint(p.y, p.x)
        assert not p.signal[:, ~(rows[:, None] & cols[None, :])].any()
        np.testing.assert_array_equal(p.projection, p.signal[:, r0:r1, c0:c1])
        np.testing.assert_array_equal(p.patch, x[p.image, :, r0:r1, c0:c1])


@given(st.lists(layer_strategy(), min_size=1, max_size=3), st.integers(0, 2 ** 32 - 1),
       st.sampled_from(mg.MODES))
def test_projections_of_random_nets_stay_in_their_receptive_field(specs, seed, mode):
    rng = np.random.default_rng(seed)
    model = build(specs, relu=True)
    for _, layer in model.named_leaves():
        if isinstance(layer, mg.Conv2d):
            layer.weight = rng.standard_normal(layer.weight.shape)
            layer.bias = rng.standard_normal(layer.bias.shape)
    rf0 = receptive_field(model, "features")
    H, W = rf0.size[0] + 3 * rf0.jump[0], rf0.size[1] + 3 * rf0.jump[1]
    x = rng.standard_normal((3, 1, H, W))
    rf = receptive_field(model, "features", x.shape)
    channels = model.forward(x[:1])[0].shape[1]
    for p in projections(model, x, "features", channels - 1, k=5, mode=mode, batch_size=2):
        rows, cols = rf.footprint(p.y, p.x)
        (r0, r1), (c0, c1) = p.box
        inside = np.zeros((H, W), bool)
        inside[r0:r1, c0:c1] = True
        assert not p.signal[:, ~inside].any()
        assert not p.signal[:, ~(rows[:, None] & cols[None, :])].any()


def test_top_k_order_and_ties():
    acts = np.zeros((3, 2, 2))
    acts[2, 0, 0] = 5           # the largest, in the last image
    acts[1, 1, 0] = acts[0, 1, 1] = acts[1, 0, 1] = 3     # ties: image first, then row, then column
    acts[0, 0, 0] = np.nan      # NaN ranks last
    acts[0, 0, 1] = -1
    order = top_k(acts, 12)
    assert order[:4] == [(2, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
    assert order[-2:] == [(0, 0, 1), (0, 0, 0)]
    zeros = [(0, 1, 0), (1, 0, 0), (1, 1, 1), (2, 0, 1), (2, 1, 0), (2, 1, 1)]
    assert order[4:10] == zeros
    assert top_k(acts, 2) == order[:2] and len(top_k(acts, 100)) == 12


def test_projections_rank_over_images_and_positions():
    conv = mg.Conv2d(1, 2, 1, bias=False)
    conv.weight = np.array([1.0, -1.0]).reshape(2, 1, 1, 1)       # channel 0: the input, 1: its negative
    model = mg.Sequential(conv)
    x = np.zeros((3, 1, 2, 3))
    x[1, 0, 1, 2] = 4
    x[2, 0, 0, 1] = x[0, 0, 1, 0] = 2                              # tie: image 0 comes first
    x[0, 0, 0, 0] = -7
    res = projections(model, x, "0", 0, k=3)
    assert [(p.image, p.y, p.x, p.activation) for p in res] == [(1, 1, 2, 4.0), (0, 1, 0, 2.0), (2, 0, 1, 2.0)]
    for p in res:
        assert p.box == ((p.y, p.y + 1), (p.x, p.x + 1))
        assert p.projection.shape == p.patch.shape == (1, 1, 1)
        assert p.projection[0, 0, 0] == p.activation       # seed = the value; the conv's weight is 1
    other = projections(model, x, "0", 1, k=1)
    assert [(p.image, p.y, p.x) for p in other] == [(0, 0, 0)] and other[0].activation == 7
    assert len(projections(model, x, "0", 0, k=100)) == 18


def test_projections_errors(digits):
    model, x = digits
    with pytest.raises(ValueError, match="channel 32 out of range for layer 'features.7', which has 32 channels"):
        projections(model, x, "features.7", 32)
    with pytest.raises(ValueError, match="channel -1 out of range"):
        projections(model, x, "features.7", -1)
    with pytest.raises(TypeError, match="channel must be an int"):
        projections(model, x, "features.7", [3, 4])
    with pytest.raises(ValueError, match=r"layer 'flatten' \(Flatten\)"):
        projections(model, x, "classifier.0", 0)
    with pytest.raises(ValueError, match="unknown mode"):
        projections(model, x, "features.7", 0, mode="smooth")
    with pytest.raises(ValueError, match="unknown seed 'logit'; expected one of one, value"):
        projections(model, x, "features.7", 0, seed="logit")
    with pytest.raises(ValueError, match="k must be a positive int"):
        projections(model, x, "features.7", 0, k=0)
    with pytest.raises(ValueError, match=r"4-D input"):
        projections(model, x[0], "features.7", 0)


# ---------------------------------------------------------------------------- command

def png_size(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size, np.asarray(im.convert("L"), dtype=np.float64)


def test_cli_one_png_per_channel_with_k_panels(tmp_path, capsys):
    code = main(["projections", "--channels", "2,19", "-k", "4", "--panel-size", "1", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_features.7_channel-19.png",
                                                          "digits_features.7_channel-2.png"]
    assert "features.7: receptive field 18x18 pixels, jump 4x4, over the 360 held-out digits" in out
    for c in (2, 19):
        path = tmp_path / f"digits_features.7_channel-{c}.png"
        assert f"wrote {path} (8 panels)" in out          # 4 projections + 4 patches
        size, pixels = png_size(path)
        assert size == (450, 240)                          # (2 * 2 + 0.5) x (2 + 0.4) inches at 100 dpi
        assert pixels.std() > 10
    assert grid_shape(4) == (2, 2) and grid_shape(9) == (3, 3) and grid_shape(10) == (3, 4)


def test_cli_defaults(tmp_path, capsys):
    """Out of the box: digits, its last conv ReLU, the 4 channels with the strongest activations, k=9."""
    code = main(["projections", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    model = mg.zoo.digits()
    x = mg.zoo.digits_preprocess(mg.zoo.digits_test_data()[0])
    strongest = model.forward(x, upto="features.7")[0].max(axis=(0, 2, 3))
    chans = np.argsort(-strongest, kind="stable")[:4]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"digits_features.7_channel-{c}.png" for c in chans)
    assert out.count("(18 panels)") == 4
    size, _ = png_size(tmp_path / f"digits_features.7_channel-{chans[0]}.png")
    assert size == (650, 340)                          # (2 * 3 + 0.5) x (3 + 0.4) inches at 100 dpi


def test_cli_other_layer_mode_and_images(tmp_path, capsys):
    code = main(["projections", "--layer", "features.4", "--channel", "9", "-k", "3", "--mode", "guided",
                 "--seed", "one", "--images", "digits:0", "digits:1", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "receptive field 8x8 pixels, jump 2x2, over 2 image(s)" in out
    assert "(6 panels)" in out and (tmp_path / "digits_features.4_channel-9.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--layer", "classifier.0"], "layer 'flatten' (Flatten)"),
    (["--channel", "40"], "channel 40 out of range for layer 'features.7'"),
    (["--channels", "1,x"], "--channels '1,x'"),
])
def test_cli_errors(tmp_path, capsys, argv, message):
    code = main(["projections", *argv, "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and message in err and err.startswith("minigbp projections: error:")


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["projections", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "minigbp projections --out out/" in out and "--channels" in out


def test_projections_follow_the_conventions():
    """The switches reach the projections: each equals backprop with the same conventions."""
    model = mg.zoo.digits()
    x = mg.zoo.digits_preprocess(mg.zoo.digits_test_data()[0][:12])
    rules = mg.Conventions(pool_ties="split", relu_at_zero="pass")
    for p in mg.projections(model, x, "features.7", 13, k=2, mode="guided", seed="one", conventions=rules):
        out, tape = model.forward(x[p.image:p.image + 1], upto="features.7")
        ones = np.zeros_like(out)
        ones[0, 13, p.y, p.x] = 1
        want = model.backward(ones, tape, "guided", conventions=rules)[0]
        np.testing.assert_allclose(p.signal, want, rtol=0, atol=1e-6)
