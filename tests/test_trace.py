"""minigbp.trace: per-layer traces, their save/load round trip, diff, and the torch-side recorder."""

import importlib.util
import json

import numpy as np
import pytest

import minigbp as mg
from minigbp.explain import Target
from minigbp.ops.relu import MODES
from minigbp.verify.tracing import Difference, Trace, trace



def small_model(dtype=np.float64):
    mg.manual_seed(0)
    model = mg.Sequential(
        features=mg.Sequential(mg.Conv2d(2, 4, 3, padding=1), mg.ReLU(), mg.MaxPool2d(2),
                               mg.Conv2d(4, 6, 3, padding=1), mg.ReLU(), mg.AvgPool2d(2)),
        flatten=mg.Flatten(),
        classifier=mg.Sequential(mg.Linear(24, 16), mg.ReLU(), mg.Linear(16, 16), mg.ReLU(), mg.Linear(16, 5)),
    )
    model.load_state_dict({k: v.astype(dtype) for k, v in model.state_dict().items()})
    return model


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).standard_normal((3, 2, 8, 8))


# ------------------------------------------------------------------ minigbp traces

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("switches", [{}, {"preset": "torchray"}, {"relu_scope": "features.*", "seed": "value"},
                                      {"pool_ties": "split", "relu_at_zero": "pass"}])
def test_final_signal_equals_backprop_exactly(data, mode, switches):
    model = small_model()
    t = trace(model, data, np.array([0, 3, 4]), mode=mode, **switches)
    want = mg.backprop(model, data, np.array([0, 3, 4]), mode=mode, **switches)
    assert np.array_equal(t.result, want) and t.result.dtype == want.dtype
    assert t.layers[0].signal_out is t.result
    assert t.mode == mode and t.conventions == mg.conventions.resolve(
        switches.get("preset"), mode, switches={k: v for k, v in switches.items() if k != "preset"}).as_dict()


def test_records_are_consistent(data):
    model = small_model(np.float32)
    x = data.astype(np.float32)
    t = trace(model, x, 2, mode="guided")
    assert t.names == [n for n, _ in model.named_leaves()]
    assert [r.type for r in t] == [type(layer).__name__ for _, layer in model.named_leaves()]
    assert np.array_equal(t["classifier.4"].output, model(x))
    for below, above in zip(t.layers, t.layers[1:]):
        assert above.signal_out is below.signal_in  # what leaves a layer arrives at the one below
        assert below.output.shape == below.signal_in.shape and below.output.dtype == np.float32
    assert np.array_equal(t.layers[-1].signal_in[:, 2], np.ones(3))
    assert t[0] is t.layers[0] and "flatten" in t
    with pytest.raises(KeyError, match="no layer 'nope'"):
        t["nope"]
    text = str(t)
    assert "features.0" in text and "max|signal in|" in text and "(3, 5)" in text


def test_start_layer_and_explain_targets(data):
    model = small_model()
    t = trace(model, data, Target("channel", 1, "features.3"), mode="deconvnet")
    assert t.names[-1] == "features.3" and "channel 1 of features.3" in t.target
    seed = np.zeros((3, 6, 4, 4))
    seed[:, 1] = 1
    assert np.array_equal(t.result, mg.backprop(model, data, seed, mode="deconvnet", layer="features.3"))
    t2 = trace(model, data, Target("rank", 0), mode="guided")
    assert np.array_equal(t2.result, mg.backprop(model, data, model(data).argmax(1), mode="guided"))


# ------------------------------------------------------------------ save / load

def test_round_trip_through_save_and_load(tmp_path, data):
    t = trace(small_model(), data, np.array([1, 2, 3]), mode="guided", relu_scope="classifier.*")
    path = tmp_path / "guided.trace"  # no .npz suffix: the exact path is written
    t.save(path)
    assert path.exists() and not (tmp_path / "guided.trace.npz").exists()
    u = Trace.load(path)
    assert u.names == t.names and [r.type for r in u] == [r.type for r in t]
    for a, b in zip(t, u):
        for f in ("output", "signal_in", "signal_out"):
            assert np.array_equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype
        assert b.input is None
    assert np.array_equal(u.x, data) and np.array_equal(u.result, t.result)
    assert u.mode == "guided" and u.conventions == t.conventions and u.target == "classes [1, 2, 3]"
    assert u.diff(t, rtol=0) is None and t.diff(u, rtol=0) is None
    m = u.manifest
    assert m["format"] == "minigbp-trace" and m["minigbp_version"] == mg.__version__ and m["source"] == "minigbp"
    assert m["conventions"]["relu_scope"] == "classifier.*"
    with np.load(path, allow_pickle=False) as f:  # the manifest is a plain text entry of the npz
        assert json.loads(str(f["manifest.json"])) == m
        first = m["layers"][0]
        assert first == {"name": "features.0", "type": "Conv2d",
                         "output": {"key": "0.output", "shape": [3, 4, 8, 8], "dtype": "float64"},
                         "signal_in": {"key": "0.signal_in", "shape": [3, 4, 8, 8], "dtype": "float64"},
                         "signal_out": {"key": "0.signal_out", "shape": [3, 2, 8, 8], "dtype": "float64"}}
        assert all(np.array_equal(f[e[k]["key"]], getattr(t[e["name"]], k))
                   for e in m["layers"] for k in ("output", "signal_in", "signal_out"))


def test_load_refuses_other_npz(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a minigbp trace"):
        Trace.load(tmp_path / "w.npz")


# ------------------------------------------------------------------------ diff

def test_diff_finds_an_injected_divergence(data):
    model = small_model()
    a = trace(model, data, 1, mode="guided")
    b = trace(model, data, 1, mode="guided")
    assert a.diff(b) is None
    b["features.3"].signal_out = b["features.3"].signal_out.copy()
    b["features.3"].signal_out[0, 1, 2, 3] += 1e-3
    d = a.diff(b)
    assert isinstance(d, Difference)
    assert (d.layer, d.type, d.what) == ("features.3", "Conv2d", "signal out")
    assert d.max_abs == pytest.approx(1e-3) and d.shape == d.other_shape == (3, 4, 4, 4)
    assert "features.3 (Conv2d): signal out" in str(d)
    assert a.diff(b, rtol=1e-3 / np.abs(a['features.3'].signal_out).max() * 1.01) is None  # within tolerance
    # outputs come first (forward order), then signals (backward order)
    b["features.1"].output = b["features.1"].output + 1
    assert (a.diff(b).layer, a.diff(b).what) == ("features.1", "output")
    assert a.diff(b, outputs=False).layer == "features.3"


def test_diff_names_the_first_relu_outside_the_scope(data):
    model = small_model()
    full = trace(model, data, 4, mode="guided")
    partial = trace(model, data, 4, mode="guided", relu_scope="features.*")  # like utkuozbulak's recipe
    d = partial.diff(full)
    # walking down from the output, the classifier's last ReLU is the first to act as vanilla
    assert (d.layer, d.type, d.what) == ("classifier.3", "ReLU", "signal out")
    other = trace(model, data, 4, mode="guided", relu_scope="classifier.[13]")
    assert other.diff(full).layer == "features.4"  # now the features' last ReLU is the vanilla one
    assert full.diff(trace(model, data, 4, mode="guided", relu_scope="*.*")) is None  # every 2-segment name


def test_diff_seed_difference_is_named_at_the_top(data):
    model = small_model()
    d = trace(model, data, 1, seed="value").diff(trace(model, data, 1))
    assert (d.layer, d.what) == ("classifier.4", "signal in")


# ----------------------------------------------------------------- torch recorder

torch_tests = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")


def load_recipes():
    from example_scripts import load_example

    return load_example("verify_recipes.py", "trace_recipes_under_test")


@pytest.fixture(scope="module")
def recipes():
    pytest.importorskip("torch")
    return load_recipes()


@torch_tests
@pytest.mark.parametrize("inplace", [False, True])
def test_torch_recorder_equals_minigbp_vanilla_and_guided(recipes, inplace):
    torch = pytest.importorskip("torch")
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    net = (recipes.make_model_inplace() if inplace else recipes.make_model()).double().eval()
    model = mg.from_torch(net, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3,) + mg.io.pytorch.infer_input_shape(model)[1:])
    targets = np.array([1, 5, 7])

    ours = trace(model, x, targets, mode="vanilla")
    theirs = Trace.from_torch(net, x, targets)  # plain autograd
    assert theirs.source == "torch" and theirs.mode == "vanilla" and theirs.notes == []
    assert theirs.names == ours.names  # torch.flatten in forward is a node on both sides
    assert theirs.diff(ours, rtol=1e-10) is None
    np.testing.assert_allclose(theirs.result, ours.result, rtol=0, atol=1e-10 * np.abs(ours.result).max())

    def guided(m, xt, t):
        return captum.GuidedBackprop(m).attribute(xt, target=t)

    ours_g = trace(model, x, targets, mode="guided")
    theirs_g = Trace.from_torch(net, x, targets, attribute_fn=guided, mode_label="guided")
    assert theirs_g.mode == "guided" and theirs_g.notes == []
    assert theirs_g.diff(ours_g, rtol=1e-10) is None
    for r in theirs_g:  # every layer, both signals
        assert np.abs(r.signal_out.reshape(ours_g[r.name].signal_out.shape) - ours_g[r.name].signal_out).max() \
            <= 1e-10 * max(np.abs(ours_g[r.name].signal_out).max(), 1e-300)
    np.testing.assert_allclose(theirs_g.result, ours_g.result, rtol=0, atol=1e-10 * np.abs(ours_g.result).max())
    # guided and vanilla part at the classifier's last ReLU, walking down
    d = theirs_g.diff(ours, rtol=1e-10)
    assert (d.layer, d.type, d.what) == ("classifier.4", "ReLU", "signal out")
    if inplace:  # the recorded ReLU output is the value right after the ReLU ran
        rec = theirs["classifier.4"]
        assert (rec.output >= 0).all() and (rec.input < 0).any()  # recorded after / before it ran
        np.testing.assert_allclose(rec.output, ours["classifier.4"].output, rtol=1e-12, atol=1e-15)


@torch_tests
def test_torch_trace_round_trip_and_seed_target(recipes, tmp_path):
    torch = pytest.importorskip("torch")
    net = recipes.make_model().double().eval()
    model = mg.from_torch(net, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((2,) + mg.io.pytorch.infer_input_shape(model)[1:])
    seed = np.random.default_rng(3).standard_normal((2, 10))
    theirs = Trace.from_torch(net, torch.tensor(x), seed)
    assert theirs.diff(trace(model, x, seed, mode="vanilla"), rtol=1e-10) is None
    theirs.save(tmp_path / "torch.npz")
    back = Trace.load(tmp_path / "torch.npz")
    assert back.source == "torch" and back.conventions is None
    assert all(np.array_equal(a.input, b.input) for a, b in zip(theirs, back))
    assert back.diff(theirs, rtol=0) is None


@torch_tests
def test_verify_probe_names_the_skipped_relus(recipes):
    pytest.importorskip("captum")
    report = mg.verify.check(recipes.make_model(), recipes.hook_features_only, mode="guided")
    p = report.probe
    assert (p.divergence["guided"].layer, p.divergence["guided"].type) == ("classifier.4", "ReLU")
    assert p.skipped == ["classifier.1", "classifier.4"]
    assert "ReLUs the recipe skipped (vanilla where guided was expected): classifier.1, classifier.4" in str(report)


def test_diff_of_traces_with_no_layer_in_common_is_a_difference(data):
    model = small_model()
    t = trace(model, data, 4, mode="guided")
    wrapped = trace(mg.Sequential(net=model), data, 4, mode="guided")  # every name prefixed
    d = t.diff(wrapped)
    assert d is not None and d.what == "no layer in common"
    assert t.diff(mg.Trace([], "vanilla")) is not None
