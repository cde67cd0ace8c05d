"""The shipped digits model (``mg.zoo.digits``), its test split and its preprocessing.

The model and the held-out split are written by ``examples/train_digits.py``; here they
are checked with minigbp alone (accuracy, size, architecture, the three backprop
modes), and against torch where torch is the oracle (bilinear interpolation, logits
and the vanilla gradient of the shipped weights).
"""

import re
from pathlib import Path

import numpy as np
import pytest

import minigbp as mg

DATA = Path(mg.__file__).resolve().parent / "data"
ALLOWED_LAYERS = (mg.Conv2d, mg.ReLU, mg.MaxPool2d, mg.Flatten, mg.Linear)


@pytest.fixture(scope="module")
def model():
    return mg.zoo.digits()


@pytest.fixture(scope="module")
def test_data():
    return mg.zoo.digits_test_data()


# ---------------------------------------------------------------------------------------
# the shipped files
# ---------------------------------------------------------------------------------------

def test_held_out_accuracy_with_minigbp_forward(model, test_data):
    images, labels = test_data
    logits = model(mg.zoo.digits_preprocess(images))
    assert logits.shape == (len(labels), 10) and logits.dtype == np.float32
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.97, f"held-out accuracy {accuracy:.4f} ({len(labels)} images) is below 0.97"


def test_shipped_model_file_is_small_and_float32():
    path = DATA / "digits.npz"
    assert path.stat().st_size < 1_000_000, f"{path} is {path.stat().st_size} bytes"
    weights = mg.load_weights(path)
    assert weights and all(a.dtype == np.float32 for a in weights.values())
    assert sum(a.size for a in weights.values()) < 100_000


def test_test_split_is_stratified_raw_digits(test_data):
    images, labels = test_data
    assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (8, 8)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    assert images.min() == 0 and images.max() == 16  # raw load_digits values, not rescaled
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10
    # load_digits has 1797 images, 174..183 per class; a stratified 20% has 34..37 per class
    assert 340 <= len(labels) <= 380 and counts.min() >= 34 and counts.max() <= 37, counts
    assert len({im.tobytes() for im in images}) > 0.95 * len(images)  # real, varied images


def test_architecture_uses_only_conv_relu_pool_flatten_linear(model):
    leaves = model.named_leaves()
    assert leaves and all(isinstance(layer, ALLOWED_LAYERS) for _, layer in leaves), \
        [type(layer).__name__ for _, layer in leaves]
    assert {type(layer) for _, layer in leaves} == set(ALLOWED_LAYERS)
    assert sum(a.size for a in model.state_dict().values()) < 100_000


def test_untrained_model_has_the_same_architecture_and_fresh_weights(model):
    fresh = mg.zoo.digits(pretrained=False)
    assert fresh.spec() == model.spec()
    assert {k: v.shape for k, v in fresh.state_dict().items()} == \
           {k: v.shape for k, v in model.state_dict().items()}
    assert not np.array_equal(fresh.state_dict()["features.0.weight"], model.state_dict()["features.0.weight"])
    assert mg.zoo.digits().spec() == model.spec()  # loading again gives the same model
    for (k, a), b in zip(model.state_dict().items(), mg.zoo.digits().state_dict().values()):
        assert np.array_equal(a, b), k


# ---------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------

def test_preprocess_matches_torch_bilinear_interpolation(test_data):
    torch = pytest.importorskip("torch")
    images = test_data[0][:50]
    rng = np.random.default_rng(0)
    for raw in (images, rng.uniform(0, 16, size=(7, 8, 8)), np.eye(8) * 16):
        ours = mg.zoo.digits_preprocess(raw)
        x = torch.from_numpy(np.asarray(raw, dtype=np.float64).reshape(-1, 1, 8, 8) / 16)
        expected = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear",
                                                   align_corners=False).numpy()
        assert ours.shape == expected.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
        # torch's scale_factor=4 path computes the same source coordinates
        by_factor = torch.nn.functional.interpolate(x.float(), scale_factor=4, mode="bilinear",
                                                    align_corners=False).numpy()
        np.testing.assert_allclose(ours, by_factor, rtol=0, atol=1e-6)


def test_interpolation_matrix_is_the_documented_operator():
    a = mg.image.bilinear_matrix(8, 32)
    assert a.shape == (32, 8)
    np.testing.assert_allclose(a.sum(axis=1), 1, atol=1e-15)
    # output pixel i samples s = (i + 1/2) / 4 - 1/2: rows 0, 1 clamp to pixel 0,
    # row 2 is 7/8 of pixel 0 and 1/8 of pixel 1, the last two rows clamp to pixel 7
    np.testing.assert_array_equal(a[0], np.eye(8)[0])
    np.testing.assert_array_equal(a[1], np.eye(8)[0])
    np.testing.assert_allclose(a[2, :2], [0.875, 0.125])
    np.testing.assert_array_equal(a[-1], np.eye(8)[7])
    np.testing.assert_array_equal(a[-2], np.eye(8)[7])
    img = np.random.default_rng(1).integers(0, 17, size=(8, 8))
    np.testing.assert_allclose(mg.zoo.digits_preprocess(img)[0, 0], a @ (img / 16) @ a.T, atol=1e-7)


def test_preprocess_accepts_any_numeric_dtype_and_a_single_image(test_data):
    images = test_data[0][:5]
    expected = mg.zoo.digits_preprocess(images)
    assert expected.shape == (5, 1, 32, 32) and expected.dtype == np.float32
    assert 0 <= expected.min() and expected.max() <= 1
    for dtype in (np.int64, np.int32, np.uint16, np.float32, np.float64):
        np.testing.assert_array_equal(mg.zoo.digits_preprocess(images.astype(dtype)), expected)
    np.testing.assert_array_equal(mg.zoo.digits_preprocess(images.tolist()), expected)
    single = mg.zoo.digits_preprocess(images[3])
    assert single.shape == (1, 1, 32, 32)
    np.testing.assert_array_equal(single[0], expected[3])
    assert mg.zoo.digits_preprocess(np.zeros((0, 8, 8))).shape == (0, 1, 32, 32)
    before = images.copy()
    mg.zoo.digits_preprocess(images)
    np.testing.assert_array_equal(images, before)  # input untouched


@pytest.mark.parametrize("shape", [(8,), (64,), (8, 9), (3, 1, 8, 8), (2, 8, 8, 1), (4, 32, 32), ()])
def test_preprocess_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"\(N, 8, 8\) or \(8, 8\).*" + re_shape(shape)):
        mg.zoo.digits_preprocess(np.zeros(shape))


def re_shape(shape):
    return re.escape(str(tuple(shape)))


@pytest.mark.parametrize("bad", [255, -1, np.nan, 16.5])
def test_preprocess_rejects_values_outside_0_16(bad):
    images = np.zeros((2, 8, 8))
    images[1, 3, 4] = bad
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        mg.zoo.digits_preprocess(images)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), dtype=bool), np.zeros((8, 8), dtype=complex),
                                 np.full((8, 8), "1")])
def test_preprocess_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="real numbers"):
        mg.zoo.digits_preprocess(bad)


# ---------------------------------------------------------------------------------------
# explanations
# ---------------------------------------------------------------------------------------

def test_backprop_in_all_three_modes_gives_informative_maps(model, test_data):
    images, labels = test_data
    x = mg.zoo.digits_preprocess(images[:6])
    maps = {}
    for mode in mg.MODES:
        g = mg.backprop(model, x, target=labels[:6], mode=mode)
        assert g.shape == x.shape and g.dtype == x.dtype, mode
        assert np.isfinite(g).all(), mode
        for i in range(len(x)):
            assert g[i].max() > g[i].min(), f"{mode}: the map of test digit {i} is constant"
        maps[mode] = g
    for i in range(len(x)):
        assert not np.allclose(maps["guided"][i], maps["vanilla"][i]), f"digit {i}: guided == vanilla"
        assert not np.allclose(maps["deconvnet"][i], maps["vanilla"][i]), f"digit {i}: deconvnet == vanilla"
    # the true class's guided map puts net positive evidence on the digit's strokes
    assert (maps["guided"] * (x > 0.5)).sum() > 0


def test_shipped_weights_match_torch_logits_and_gradient(model, test_data):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    net = nn.Sequential()
    net.add_module("features", nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)))
    net.add_module("flatten", nn.Flatten())
    net.add_module("classifier", nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10)))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    net = net.double().eval()

    images, labels = test_data
    x = mg.zoo.digits_preprocess(images[:8]).astype(np.float64)
    xt = torch.from_numpy(x).requires_grad_(True)
    logits_t = net(xt)
    logits_t.gather(1, torch.from_numpy(labels[:8])[:, None]).sum().backward()
    np.testing.assert_allclose(model(x), logits_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = mg.backprop(model, x, target=labels[:8], mode="vanilla")
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
