"""Sequential: naming (identical to torch), indexing, weights in and out, ``upto``,
parameter gradients, dtype preservation, re-entrancy across threads, seeding."""

import concurrent.futures
import threading
from collections import OrderedDict

import numpy as np
import pytest

import minigbp as mg

MODES = mg.MODES


def data(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def vgg_like(seed=0):
    """A small nested network with torch-style names; input (N, 3, 12, 12), 7 classes."""
    mg.manual_seed(seed)
    return mg.Sequential(
        features=mg.Sequential(
            mg.Conv2d(3, 8, 3, padding=1), mg.ReLU(),
            mg.Conv2d(8, 8, 3, padding=1, groups=2), mg.ReLU(), mg.MaxPool2d(2),          # 6x6
            mg.Conv2d(8, 6, 3, stride=2, padding=1, bias=False), mg.ReLU(),               # 3x3
        ),
        avgpool=mg.AdaptiveAvgPool2d((2, 2)),
        classifier=mg.Sequential(
            mg.Flatten(), mg.Linear(24, 16), mg.ReLU(), mg.Dropout(), mg.Linear(16, 7),
        ),
    )


def torch_twin(torch, nn):
    """The same architecture in torch, built with OrderedDict exactly as torchvision does."""
    return nn.Sequential(OrderedDict([
        ("features", nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False), nn.ReLU(),
        )),
        ("avgpool", nn.AdaptiveAvgPool2d((2, 2))),
        ("classifier", nn.Sequential(
            nn.Flatten(), nn.Linear(24, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 7),
        )),
    ]))


# ------------------------------------------------------------------- naming

def test_positional_names():
    model = mg.Sequential(mg.Conv2d(1, 2, 3), mg.ReLU(), mg.Flatten(), mg.Linear(8, 3))
    assert [n for n, _ in model.named_leaves()] == ["0", "1", "2", "3"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert len(model) == 4 and [type(l).__name__ for l in model] == ["Conv2d", "ReLU", "Flatten", "Linear"]


def test_keyword_names_keep_their_order():
    model = mg.Sequential(conv=mg.Conv2d(1, 2, 3), act=mg.ReLU(), flat=mg.Flatten(), fc=mg.Linear(8, 3, bias=False))
    assert [n for n, _ in model.named_leaves()] == ["conv", "act", "flat", "fc"]
    assert list(model.state_dict()) == ["conv.weight", "conv.bias", "fc.weight"]


def test_nested_names():
    model = vgg_like()
    assert [n for n, _ in model.named_leaves()] == (
        [f"features.{i}" for i in range(7)] + ["avgpool"] + [f"classifier.{i}" for i in range(5)])
    assert [n for n, _ in model.named_modules()][:2] == ["features", "features.0"]
    assert "classifier" in dict(model.named_modules())


def test_state_dict_keys_order_and_shapes_identical_to_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    ours = vgg_like().state_dict()
    theirs = torch_twin(torch, nn).state_dict()
    assert list(ours) == list(theirs)
    assert [v.shape for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]


def test_torch_weights_load_and_give_torch_logits_and_gradient():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = torch_twin(torch, nn).double().eval()
    model = vgg_like()
    model.load_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()})
    x = data((3, 3, 12, 12), seed=1)
    xt = torch.tensor(x, requires_grad=True)
    logits = net(xt)
    assert np.allclose(model(x), logits.detach().numpy(), rtol=0, atol=1e-12)
    target = np.array([0, 6, 3])
    logits[torch.arange(3), torch.tensor(target)].sum().backward()
    assert np.allclose(mg.backprop(model, x, target, mode="vanilla"), xt.grad.numpy(), rtol=0, atol=1e-12)


def test_dotted_names_match_torch_for_arbitrary_keywords():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    ours = mg.Sequential(block1=mg.Sequential(conv_a=mg.Conv2d(2, 3, 1), relu=mg.ReLU()),
                         block2=mg.Sequential(mg.Conv2d(3, 3, 1, bias=False), mg.Sequential(mg.Conv2d(3, 1, 1))))
    theirs = nn.Sequential(OrderedDict([
        ("block1", nn.Sequential(OrderedDict([("conv_a", nn.Conv2d(2, 3, 1)), ("relu", nn.ReLU())]))),
        ("block2", nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.Sequential(nn.Conv2d(3, 1, 1)))),
    ]))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == [
        "block1.conv_a.weight", "block1.conv_a.bias", "block2.0.weight", "block2.1.0.weight", "block2.1.0.bias"]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()][1:]


# ----------------------------------------------------------------- indexing

def test_getitem_by_index_name_and_dotted_name():
    model = vgg_like()
    features = model["features"]
    assert model[0] is features and isinstance(features, mg.Sequential)
    assert model[-1] is model["classifier"]
    assert model["features.5"] is features[5] is features["5"]
    assert isinstance(model["features.5"], mg.Conv2d) and model["features.5"].bias is None
    assert model["classifier.4"] is model["classifier"][-1]
    assert model["avgpool"] is model[1]
    assert model[np.int64(2)] is model["classifier"]
    with pytest.raises(KeyError):
        model["features.5.weight"]  # a parameter is not a layer


# ------------------------------------------------------------ weights in/out

def test_state_dict_returns_the_models_own_arrays():
    model = vgg_like()
    sd = model.state_dict()
    assert sd["features.0.weight"] is model["features.0"].weight
    assert sd["classifier.4.bias"] is model["classifier.4"].bias


def test_load_state_dict_round_trip():
    a, b = vgg_like(seed=1), vgg_like(seed=2)
    x = data((2, 3, 12, 12))
    assert not np.allclose(a(x), b(x))
    source = {k: v.copy() for k, v in a.state_dict().items()}
    result = b.load_state_dict(source)
    assert result == mg.LoadResult([], [])
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert np.array_equal(a(x), b(x))
    for mode in MODES:
        assert np.array_equal(mg.backprop(a, x, 3, mode=mode), mg.backprop(b, x, 3, mode=mode))
    # the model holds copies: changing the source afterwards changes nothing
    for v in source.values():
        v[...] = 0
    assert np.array_equal(a(x), b(x))
    assert all(np.array_equal(v, a.state_dict()[k]) for k, v in b.state_dict().items())


def test_load_state_dict_non_strict_reports_missing_and_unexpected():
    model = vgg_like()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    new_w = np.full((7, 16), 0.5, np.float32)
    result = model.load_state_dict({"classifier.4.weight": new_w, "classifier.9.weight": np.zeros(1),
                                    "num_batches_tracked": np.zeros(())}, strict=False)
    assert isinstance(result, mg.LoadResult)
    assert result.missing_keys == [k for k in before if k != "classifier.4.weight"]
    assert result.unexpected_keys == ["classifier.9.weight", "num_batches_tracked"]
    after = model.state_dict()
    assert np.array_equal(after["classifier.4.weight"], new_w)
    assert all(np.array_equal(after[k], before[k]) for k in before if k != "classifier.4.weight")


def test_load_state_dict_dtypes():
    model = vgg_like()
    sd = model.state_dict()
    assert all(v.dtype == np.float32 for v in sd.values())  # default init is float32, like torch
    model.load_state_dict({k: v.astype(np.float64) for k, v in sd.items()})
    assert all(v.dtype == np.float64 for v in model.state_dict().values())
    half = {k: (v / 4).astype(np.float16) for k, v in sd.items()}
    model.load_state_dict(half)
    for k, v in model.state_dict().items():
        assert v.dtype == np.float32
        assert np.array_equal(v, half[k].astype(np.float32))  # float16 -> float32 is exact


def test_load_state_dict_accepts_nested_lists():
    model = mg.Sequential(mg.Linear(2, 2))
    model.load_state_dict({"0.weight": [[1.0, 2.0], [3.0, 4.0]], "0.bias": [0.5, -0.5]})
    assert np.array_equal(model(np.array([[1.0, 1.0]])), [[3.5, 6.5]])


# ------------------------------------------------------------------ upto

def _run_prefix(model, x, names):
    leaves = dict(model.named_leaves())
    for n in names:
        x = leaves[n](x)
    return x


@pytest.mark.parametrize("upto, last", [
    ("features.0", "features.0"),
    ("features.4", "features.4"),
    ("features", "features.6"),
    ("avgpool", "avgpool"),
    ("classifier.2", "classifier.2"),
    ("classifier", "classifier.4"),
])
def test_forward_upto(upto, last):
    model = vgg_like()
    x = data((2, 3, 12, 12))
    names = [n for n, _ in model.named_leaves()]
    stop = names.index(last) + 1
    out, tape = model.forward(x, upto=upto)
    assert [t[0] for t in tape] == names[:stop]
    assert np.array_equal(out, _run_prefix(model, x, names[:stop]))
    # backprop from there starts at the same place
    seed = data(out.shape, seed=3)
    assert np.array_equal(mg.backprop(model, x, seed, mode="vanilla", layer=upto),
                          model.backward(seed, tape, "vanilla"))


def test_backprop_from_container_layer_equals_its_last_leaf():
    model = vgg_like()
    x = data((2, 3, 12, 12))
    for mode in MODES:
        assert np.array_equal(mg.backprop(model, x, 2, mode=mode, layer="features"),
                              mg.backprop(model, x, 2, mode=mode, layer="features.6"))


def test_int_target_at_a_conv_layer_seeds_every_position_of_the_channel():
    model = vgg_like()
    x = data((2, 3, 12, 12))
    out, tape = model.forward(x, upto="features.3")
    seed = np.zeros_like(out)
    seed[:, 5] = 1
    for mode in MODES:
        assert np.array_equal(mg.backprop(model, x, 5, mode=mode, layer="features.3"),
                              model.backward(seed, tape, mode))


def test_single_layer_model():
    layer = mg.Conv2d(2, 3, 3)
    x = data((1, 2, 5, 5))
    seed = data((1, 3, 3, 3), seed=1)
    out, cache = layer.forward(x)
    assert np.array_equal(mg.backprop(layer, x, seed, mode="guided"), layer.backward(seed, cache))


# ------------------------------------------------------- parameter gradients

def test_backward_with_grads_keys_shapes_dtypes():
    model = vgg_like()
    model.load_state_dict({k: v.astype(np.float64) for k, v in model.state_dict().items()})
    x = data((2, 3, 12, 12))
    out, tape = model.forward(x)
    dout = data(out.shape, seed=1)
    dx, grads = model.backward_with_grads(dout, tape)
    sd = model.state_dict()
    assert list(grads) == list(sd)  # same keys, same (torch's) order; no bias for features.5
    assert "features.5.bias" not in grads
    for k in sd:
        assert grads[k].shape == sd[k].shape and grads[k].dtype == np.float64
    assert np.array_equal(dx, model.backward(dout, tape, "vanilla"))
    # the last linear layer's gradient is exactly dout^T @ its input
    h, _ = model.forward(x, upto="classifier.3")
    assert np.allclose(grads["classifier.4.weight"], dout.T @ h, rtol=0, atol=1e-12)
    assert np.allclose(grads["classifier.4.bias"], dout.sum(0), rtol=0, atol=1e-12)


def test_backward_with_grads_on_a_partial_tape():
    model = vgg_like()
    x = data((2, 3, 12, 12))
    out, tape = model.forward(x, upto="features.2")
    _, grads = model.backward_with_grads(np.ones_like(out), tape)
    assert list(grads) == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]


def test_backward_with_grads_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    net = torch_twin(torch, torch.nn).double().eval()
    model = vgg_like()
    model.load_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()})
    x = data((2, 3, 12, 12), seed=2)
    out, tape = model.forward(x)
    dout = data(out.shape, seed=3)
    _, grads = model.backward_with_grads(dout, tape)
    (net(torch.tensor(x)) * torch.tensor(dout)).sum().backward()
    for k, p in net.named_parameters():
        assert np.allclose(grads[k], p.grad.numpy(), rtol=0, atol=1e-12), k


# ------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weights", [np.float32, np.float64])
def test_dtype_in_equals_dtype_out(dtype, weights):
    model = vgg_like()
    model.load_state_dict({k: v.astype(weights) for k, v in model.state_dict().items()})
    x = data((2, 3, 12, 12), dtype)
    out, tape = model.forward(x)
    assert out.dtype == dtype
    for mode in MODES:
        for target in (1, np.array([0, 6]), data((2, 7), np.float64, seed=1)):
            assert mg.backprop(model, x, target, mode=mode).dtype == dtype
        assert mg.backprop(model, x, 0, mode=mode, layer="features.4").dtype == dtype
        assert model.backward(np.ones_like(out), tape, mode).dtype == dtype
    _, grads = model.backward_with_grads(np.ones_like(out), tape)
    assert all(g.dtype == dtype for g in grads.values())


def test_float32_and_float64_agree():
    model = vgg_like()
    x = data((2, 3, 12, 12))
    for mode in MODES:
        a = mg.backprop(model, x, 4, mode=mode)
        b = mg.backprop(model, x.astype(np.float32), 4, mode=mode)
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(a).max())


# -------------------------------------------------------------- re-entrancy

def test_one_model_many_threads():
    """8 threads share ONE model; each call must equal its single-threaded answer exactly."""
    mg.manual_seed(4)
    model = mg.Sequential(
        features=mg.Sequential(mg.Conv2d(3, 16, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
                               mg.Conv2d(16, 16, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2)),
        classifier=mg.Sequential(mg.Flatten(), mg.Linear(16 * 4 * 4, 32), mg.ReLU(), mg.Linear(32, 10)),
    )
    jobs = []
    for i in range(24):
        n = 1 + i % 4
        dtype = np.float64 if i % 2 else np.float32
        x = data((n, 3, 16, 16), dtype, seed=100 + i)
        target = [i % 10, np.arange(n) * 3 % 10, data((n, 10), dtype, seed=200 + i)][i % 3]
        layer = "features.4" if i % 5 == 0 else None
        if layer is not None:
            target = i % 16
        jobs.append((x, target, MODES[i % 3], layer))
    expected = [mg.backprop(model, *job[:2], mode=job[2], layer=job[3]) for job in jobs]

    barrier = threading.Barrier(8)

    def run(k):
        if k < 8:
            barrier.wait()  # the first eight calls start together
        x, target, mode, layer = jobs[k % len(jobs)]
        return mg.backprop(model, x, target, mode=mode, layer=layer)

    order = list(range(len(jobs))) * 3
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, order))
    for k, got in zip(order, results):
        assert got.dtype == expected[k].dtype
        assert np.array_equal(got, expected[k]), f"job {k} differs when run concurrently"
    # the modes really differ, so mixing them up would have been caught
    x = jobs[0][0]
    assert not np.array_equal(mg.backprop(model, x, 1, mode="guided"), mg.backprop(model, x, 1, mode="deconvnet"))


# ------------------------------------------------------------------ seeding

def test_manual_seed_makes_initialization_reproducible():
    def build():
        return mg.Sequential(mg.Conv2d(3, 4, 3), mg.ReLU(), mg.Flatten(), mg.Linear(4, 2))

    mg.manual_seed(123)
    a = build().state_dict()
    mg.manual_seed(123)
    b = build().state_dict()
    c = build().state_dict()  # generator continues: different values
    mg.manual_seed(124)
    d = build().state_dict()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
        assert not np.array_equal(a[k], c[k]) and not np.array_equal(a[k], d[k]), k


def test_default_init_is_torchs_uniform_bound():
    mg.manual_seed(0)
    conv, lin = mg.Conv2d(4, 64, 3, groups=2), mg.Linear(50, 200)
    for w, fan_in in ((conv.weight, 2 * 9), (conv.bias, 2 * 9), (lin.weight, 50), (lin.bias, 50)):
        bound = 1 / np.sqrt(fan_in)
        assert w.dtype == np.float32
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
