"""Targets, Grad-CAM, SmoothGrad and the randomization sanity check."""

import numpy as np
import pytest

import minigbp as mg
from minigbp import explain as E
from minigbp.io.image import bilinear_resize

TIGHT = 1e-10  # float64 against float64: only summation order differs


def small_model(seed=0):
    mg.manual_seed(seed)
    model = mg.Sequential(
        features=mg.Sequential(mg.Conv2d(3, 6, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
                               mg.Conv2d(6, 8, 3, padding=1), mg.ReLU()),
        avgpool=mg.AdaptiveAvgPool2d(2), flatten=mg.Flatten(),
        classifier=mg.Sequential(mg.Linear(32, 16), mg.ReLU(), mg.Linear(16, 5)),
    )
    model.load_state_dict({k: v.astype(np.float64) for k, v in model.state_dict().items()})
    return model


@pytest.fixture
def model_x():
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 12))
    return small_model(), x


def test_parse_target_kinds():
    assert E.parse_targets(None) == [E.Target("rank", 0)]
    assert E.parse_targets("top1") == [E.Target("rank", 0)]
    assert E.parse_targets(7) == E.parse_targets("7") == E.parse_targets("class:7") == [E.Target("class", 7)]
    assert E.parse_targets("top:3") == [E.Target("rank", r) for r in range(3)]
    assert E.parse_targets("layer:features.4") == [E.Target("layer", None, "features.4")]
    assert E.parse_targets("channel:features.3:2") == [E.Target("channel", 2, "features.3")]
    assert E.parse_targets("neuron:features.3:2:1:0") == [E.Target("neuron", (2, 1, 0), "features.3")]
    for bad in ("top:0", "class:x", "neuron:a:1:2", "layer:", "banana"):
        with pytest.raises(ValueError, match="bad target"):
            E.parse_targets(bad)


def test_class_targets_equal_backprop(model_x):
    model, x = model_x
    logits = model(x)
    top = logits.argmax(axis=1)
    second = np.argsort(-logits, axis=1)[:, 1]
    for mode in ("vanilla", "deconvnet", "guided"):
        assert np.array_equal(E.attribute(model, x, None, mode), mg.backprop(model, x, top, mode))
        g2 = E.attribute(model, x, E.parse_targets("top:2")[1], mode)
        assert np.array_equal(g2, mg.backprop(model, x, second, mode))
        assert np.array_equal(E.attribute(model, x, 4, mode), mg.backprop(model, x, 4, mode))


def test_layer_channel_neuron_targets_are_their_seeds(model_x):
    model, x = model_x
    out, tape = model.forward(x, upto="features.3")
    ones = np.ones_like(out)
    g = E.attribute(model, x, "layer:features.3", "vanilla")
    assert np.allclose(g, model.backward(ones, tape, "vanilla"), rtol=0, atol=TIGHT)
    seed = np.zeros_like(out)
    seed[:, 2] = 1
    assert np.allclose(E.attribute(model, x, "channel:features.3:2", "guided"),
                       model.backward(seed, tape, "guided"), rtol=0, atol=TIGHT)
    seed = np.zeros_like(out)
    seed[:, 2, 1, 0] = 1
    g = E.attribute(model, x, "neuron:features.3:2:1:0", "deconvnet")
    assert np.allclose(g, model.backward(seed, tape, "deconvnet"), rtol=0, atol=TIGHT)
    # a single neuron of a conv layer is seen through its receptive field only
    rows, cols = np.nonzero(np.abs(g).sum(axis=(0, 1)))
    assert rows.max() <= 6 and cols.max() <= 4  # rows 0..2 after pooling -> 0..5 -> 0..6 through conv 1


def test_target_errors_name_the_problem(model_x):
    model, x = model_x
    with pytest.raises(ValueError, match="out of range"):
        E.attribute(model, x, 5, "guided")
    with pytest.raises(ValueError, match="channel 8 out of range"):
        E.attribute(model, x, "neuron:features.3:8:0:0", "guided")
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        E.attribute(model, x, "layer:nope", "guided")
    with pytest.raises(ValueError, match="not a class"):
        E.attribute(model, x, "layer:features.3", "gradcam")
    with pytest.raises(ValueError, match="unknown mode"):
        E.attribute(model, x, None, "saliency")
    with pytest.raises(ValueError, match="one at a time"):
        E.attribute(model, x, "top:2", "guided")


def torch_model(model):
    torch = pytest.importorskip("torch")
    from torch import nn

    sd = {k: torch.tensor(v) for k, v in model.state_dict().items()}
    t = nn.Sequential()
    t.add_module("features", nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                           nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()))
    t.add_module("avgpool", nn.AdaptiveAvgPool2d(2))
    t.add_module("flatten", nn.Flatten())
    t.add_module("classifier", nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5)))
    t = t.double()
    t.load_state_dict(sd)
    return t


def torch_gradcam(tmodel, x, classes, layer_module):
    """Grad-CAM as Selvaraju et al. define it, written with torch hooks."""
    import torch
    import torch.nn.functional as F

    store = {}
    h = layer_module.register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    xt = torch.tensor(x)
    out = tmodel(xt)
    h.remove()
    A = store["A"]
    score = out[torch.arange(len(classes)), torch.tensor(classes)].sum()
    (G,) = torch.autograd.grad(score, A)
    alpha = G.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((alpha * A).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False).detach().numpy()


def test_gradcam_matches_torch_definition(model_x):
    model, x = model_x
    tmodel = torch_model(model)
    classes = [4, 0, 2]
    for layer, tlayer in (("features.4", tmodel.features[4]), ("features.2", tmodel.features[2])):
        ours = np.concatenate([E.gradcam(model, x[i:i + 1], c, layer) for i, c in enumerate(classes)])
        theirs = torch_gradcam(tmodel, x, classes, tlayer)
        assert ours.shape == (3, 1, 12, 12)
        assert np.allclose(ours, theirs, rtol=0, atol=TIGHT * max(1, np.abs(theirs).max()))
        assert ours.min() >= 0 and ours.std() > 0


def test_gradcam_default_layer_and_guided_gradcam(model_x):
    model, x = model_x
    assert E.default_gradcam_layer(model) == "features.4"
    cam = E.attribute(model, x, 1, "gradcam")
    guided = mg.backprop(model, x, 1, "guided")
    assert np.allclose(E.attribute(model, x, 1, "guided-gradcam"), guided * cam, rtol=0, atol=TIGHT)


def test_bilinear_resize_matches_torch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    a = np.random.default_rng(0).standard_normal((2, 3, 5, 7))
    for size in ((5, 7), (12, 9), (3, 2), (32, 32), (1, 1)):
        want = F.interpolate(torch.tensor(a), size=size, mode="bilinear", align_corners=False).numpy()
        assert np.allclose(bilinear_resize(a, size), want, rtol=0, atol=1e-12)


def test_smoothgrad_averages_noisy_maps(model_x):
    model, x = model_x
    x0 = x.copy()
    g = E.attribute(model, x, 2, "guided", smooth=4, noise_level=0.1, noise_seed=3)
    rng = np.random.default_rng(3)
    span = x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True)
    want = np.mean([mg.backprop(model, x + rng.standard_normal(x.shape) * 0.1 * span, 2, "guided")
                    for _ in range(4)], axis=0)
    assert np.allclose(g, want, rtol=0, atol=TIGHT)
    assert np.array_equal(x, x0)
    assert not np.allclose(g, mg.backprop(model, x, 2, "guided"))
    # smooth=0 is the plain map; float32 stays float32
    assert np.array_equal(E.attribute(model, x, 2, "guided", smooth=0), mg.backprop(model, x, 2, "guided"))
    assert E.attribute(model, x.astype(np.float32), 2, "vanilla", smooth=2).dtype == np.float32


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 5, 50).astype(float)  # many ties
        b = a + rng.integers(0, 3, 50)
        assert abs(E.spearman(a, b) - stats.spearmanr(a, b)[0]) < 1e-12
    assert E.spearman(np.arange(10), np.arange(10) ** 3) == pytest.approx(1.0)
    assert E.spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)


def test_cascading_randomization(model_x):
    model, x = model_x
    before = {k: v.copy() for k, v in model.state_dict().items()}
    rows = E.cascading_randomization(model, x, random_state=0)
    assert [r["randomized"] for r in rows] == ["(none)", "classifier.2", "classifier.0", "features.3",
                                               "features.0"]
    assert all(rows[0][m] == 1.0 for m in ("vanilla", "deconvnet", "guided"))
    for r in rows[1:]:
        for m in ("vanilla", "deconvnet", "guided"):
            assert -1 <= r[m] < 1
    # the model itself is untouched
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    # an unrandomized copy correlates perfectly
    g = mg.backprop(model, x, 1, "guided")
    assert E.spearman(np.abs(g).max(axis=1)[0], np.abs(g).max(axis=1)[0]) == 1.0
