"""torchvision's real architectures: ResNet, DenseNet, VGG-BN, SqueezeNet (and the plain VGGs).

* ``from_torch`` on torchvision's own models (random weights, non-trivial BatchNorm statistics)
  equals torch in float64: forward to 1e-10 relative, the vanilla signal to autograd to 1e-9;
* guided and deconvnet equal Captum where every ReLU is an ``nn.ReLU`` module; on DenseNet
  (one functional ``F.relu``) the default modes equal the rule at *every* ReLU, and
  ``preset="captum"`` equals Captum;
* ``mg.zoo`` builds each of the twenty architectures with exactly the nodes, names, layer
  configurations and state-dict keys ``from_torch`` gives the torchvision model (compared on
  "meta" tensors, so no weights are allocated), and loads torchvision checkpoints as saved,
  ``num_batches_tracked`` and DenseNet's old key names included;
* block names (``layer4``, ``features.denseblock4``) work as start layers, Grad-CAM layers
  and traces; ``minigbp explain`` runs end to end on ResNet50 and DenseNet121 checkpoints.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
captum_attr = pytest.importorskip("captum.attr")

import minigbp as mg  # noqa: E402
from minigbp.io.pytorch import trace_module  # noqa: E402
from torch_helpers import autograd_signal, every_relu, randomize_batchnorm  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning"),
              pytest.mark.filterwarnings("ignore:Using a non-full backward hook:FutureWarning")]

#: float64, relative to max |torch|: the same network with other summation orders agrees to ~1e-15
FORWARD_TOL, SIGNAL_TOL = 1e-10, 1e-9

#: the numerically checked models and the input size they run on
CHECKED = {"resnet18": 64, "resnet50": 64, "densenet121": 64, "vgg11_bn": 32, "squeezenet1_0": 64,
           "squeezenet1_1": 64}


def relative(got, want):
    scale = np.abs(want).max()
    assert scale > 0, "an all-zero reference tells nothing apart"
    return float(np.abs(got - want).max() / scale)


@pytest.fixture(scope="module")
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_cache = {}


def torchvision_model(name):
    """torchvision's model; VGG's two 4096-wide layers narrowed to 32 (the rest as built), which
    keeps the test fast: 120M fewer parameters, the same layer types and names."""
    t = getattr(torchvision.models, name)()
    if name.startswith("vgg"):
        nn = torch.nn
        t.classifier[0], t.classifier[3], t.classifier[6] = nn.Linear(512 * 7 * 7, 32), nn.Linear(32, 32), \
            nn.Linear(32, 1000)
    return t


def converted(name):
    """``(torchvision model in float64, eval mode, random BN statistics; its minigbp conversion; x)``."""
    if name not in _cache:
        torch.manual_seed(0)
        t = randomize_batchnorm(torchvision_model(name), seed=1).double().eval()
        size = CHECKED[name]
        x = np.random.default_rng(2).standard_normal((2, 3, size, size))
        _cache[name] = (t, mg.from_torch(t), x)
    return _cache[name]


# ------------------------------------------------------------------ numbers vs torch

def top_classes(t, x):
    """Each sample's highest-scoring class: its score is positive, so no ReLU on its way (SqueezeNet
    ends in one) leaves the map all zero."""
    with torch.no_grad():
        return t(torch.from_numpy(x)).argmax(dim=1).numpy()


@pytest.mark.parametrize("name", CHECKED)
def test_forward_and_vanilla_equal_torch(name, single_thread):
    t, model, x = converted(name)
    with torch.no_grad():
        want = t(torch.from_numpy(x)).numpy()
    assert relative(model(x), want) <= FORWARD_TOL
    targets = top_classes(t, x)
    seed = np.zeros_like(want)
    seed[[0, 1], targets] = 1
    assert relative(mg.backprop(model, x, targets, "vanilla"), autograd_signal(t, x, seed)) <= SIGNAL_TOL


@pytest.mark.parametrize("name", CHECKED)
def test_guided_and_deconvnet_equal_captum_and_the_rule_at_every_relu(name, single_thread):
    t, model, x = converted(name)
    targets = top_classes(t, x)
    seed = np.zeros((2, 1000))
    seed[[0, 1], targets] = 1
    functional = [n for n, layer in model.named_leaves() if isinstance(layer, mg.ReLU) and layer.functional]
    assert functional == (["relu"] if name.startswith("densenet") else [])
    for mode, method in (("guided", captum_attr.GuidedBackprop), ("deconvnet", captum_attr.Deconvolution)):
        captum = method(t).attribute(torch.tensor(x, requires_grad=True),
                                     target=torch.from_numpy(targets)).detach().numpy()
        with every_relu(mode):
            everywhere = autograd_signal(t, x, seed)
        ours = mg.backprop(model, x, targets, mode)
        assert relative(ours, everywhere) <= SIGNAL_TOL
        assert relative(mg.backprop(model, x, targets, mode, preset="captum"), captum) <= SIGNAL_TOL
        if functional:  # DenseNet: the one functional ReLU makes Captum's map a different map
            assert relative(captum, everywhere) > 0.05
            assert relative(mg.backprop(model, x, targets, mode, functional_relu="vanilla"), captum) <= SIGNAL_TOL
        else:
            assert relative(ours, captum) <= SIGNAL_TOL


def test_densenet_hook_recipe_equals_captum_not_the_rule_at_every_relu(single_thread):
    """The best-known PyTorch walkthrough clamps grad_in in a (non-full) backward hook on every
    nn.ReLU module; with DenseNet's in-place ReLUs only that older hook runs at all."""
    t, model, x = converted("densenet121")
    handles = [m.register_backward_hook(lambda m, gi, go: (gi[0].clamp(min=0),))
               for m in t.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        xt = torch.tensor(x, requires_grad=True)
        t(xt)[:, 7].sum().backward()
    finally:
        for h in handles:
            h.remove()
    recipe = xt.grad.numpy()
    assert relative(mg.backprop(model, x, 7, "guided", preset="captum"), recipe) <= SIGNAL_TOL
    assert relative(mg.backprop(model, x, 7, "guided"), recipe) > 0.05


# --------------------------------------------------------------------------------- zoo

def meta_torchvision(name):
    """torchvision's model on the "meta" device: structure and shapes, no weights allocated."""
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


@pytest.mark.parametrize("name", list(mg.zoo.ARCHITECTURES))
def test_zoo_has_torchvisions_nodes_and_state_dict(name):
    t = meta_torchvision(name)
    model = mg.zoo.build(name)
    _, names, _ = trace_module(t)
    assert [n.name for n in model.nodes] == [v for v in names.values() if v != mg.INPUT]
    theirs = {k: tuple(v.shape) for k, v in t.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {k: v.shape for k, v in model.state_dict().items()} == theirs
    assert list(model.state_dict()) == list(theirs)
    assert isinstance(model, mg.Sequential) == name.startswith(("vgg", "alexnet"))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121", "squeezenet1_0", "squeezenet1_1"])
def test_zoo_equals_the_conversion_layer_for_layer(name):
    _, model, _ = converted(name)
    zoo = mg.zoo.build(name)
    assert [(n.name, type(n.layer).__name__, n.layer.config(), n.inputs) for n in zoo.nodes] == \
           [(n.name, type(n.layer).__name__, n.layer.config(), n.inputs) for n in model.nodes]


def test_zoo_loads_torchvision_checkpoints_as_saved(tmp_path, single_thread):
    t, _, x = converted("densenet121")
    sd = t.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in sd)
    path = tmp_path / "densenet121.pth"
    torch.save(sd, path)
    model = mg.zoo.densenet121(str(path))
    with torch.no_grad():
        want = t(torch.from_numpy(x)).numpy()
    assert relative(model(x), want) <= FORWARD_TOL
    # the key names of torchvision's published DenseNet checkpoints: denselayer1.norm.1.weight
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v.numpy() for k, v in sd.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    model = mg.zoo.densenet121(legacy)
    assert relative(model(x), want) <= FORWARD_TOL
    # a failed load names the problem and leaves the model as it was
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = dict(legacy)
    bad["features.norm5.running_var"] = np.ones(3)
    with pytest.raises(ValueError, match=r"'features.norm5.running_var': shape \(3,\)"):
        model.load_state_dict(mg.zoo.densenet_legacy_keys(bad))
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())


def test_save_and_load_keep_graphs(tmp_path):
    for name in ("resnet18", "densenet121"):
        _, model, x = converted(name)
        mg.save(model, tmp_path / "m.npz")
        back = mg.load(tmp_path / "m.npz")
        assert isinstance(back, mg.Graph) and [n.name for n in back.nodes] == [n.name for n in model.nodes]
        assert back["layer1.0.relu"] is back["layer1.0.relu@1"] if name == "resnet18" else back["relu"].functional
        assert np.array_equal(back(x), model(x))


# ------------------------------------------------------------------- names at work

def test_block_names_are_start_layers_grad_cam_layers_and_traces(single_thread):
    t, model, x = converted("resnet18")
    assert model.resolve("layer4") == "layer4.1.relu@1" and model.resolve("layer1.0") == "layer1.0.relu@1"
    # the value of a block, and Grad-CAM's gradient there, as torch computes them (hooks on layer4)
    acts = {}

    def keep(module, args, out):
        acts["A"] = out
        out.retain_grad()

    handle = t.layer4.register_forward_hook(keep)
    try:
        t(torch.tensor(x[:1]))[0, 3].backward()
    finally:
        handle.remove()
    A, G = acts["A"].detach().numpy(), acts["A"].grad.numpy()
    out, _ = model.forward(x[:1], upto="layer4")
    assert relative(out, A) <= FORWARD_TOL
    assert relative(mg.backprop(model, x[:1], 3, "vanilla", layer="layer4"),
                    mg.backprop(model, x[:1], 3, "vanilla", layer="layer4.1.relu@1")) == 0
    # the default Grad-CAM layer of each family is its last rectified feature map
    assert mg.explain.default_gradcam_layer(model) == "layer4.1.relu@1"
    assert mg.explain.default_gradcam_layer(converted("densenet121")[1]) == "relu"
    assert mg.explain.default_gradcam_layer(converted("vgg11_bn")[1]) == "features.27"
    assert mg.explain.default_gradcam_layer(converted("squeezenet1_1")[1]) == "classifier.2"
    cam = mg.explain.gradcam(model, x[:1], 3, "layer4")
    assert np.array_equal(cam, mg.explain.gradcam(model, x[:1], 3))
    cam_small = np.maximum((G.mean(axis=(2, 3), keepdims=True) * A).sum(axis=1, keepdims=True), 0)
    assert relative(mg.image.bilinear_resize(cam_small, x.shape[2:]), cam) <= 1e-9
    # traces on a graph: every node, signal_out a tuple at additions, and torch's recording agrees
    tr = mg.trace(model, x, 3, mode="guided")
    assert tr.names == [n.name for n in model.nodes]
    assert isinstance(tr["layer1.0.add"].signal_out, tuple) and len(tr["layer1.0.add"].signal_out) == 2
    # the sum over consumers: maxpool's output feeds layer1.0.conv1 and the skip of layer1.0.add
    arriving = tr["maxpool"].signal_in
    assert np.allclose(arriving, tr["layer1.0.conv1"].signal_out + tr["layer1.0.add"].signal_out[1], rtol=0,
                       atol=1e-12 * np.abs(arriving).max())
    theirs = mg.Trace.from_torch(t, x, 3, attribute_fn=lambda m, xt, tt: captum_attr.GuidedBackprop(m).attribute(
        xt, target=tt), mode_label="guided")
    assert theirs.names == tr.names and theirs.diff(tr, rtol=1e-9) is None


def test_trace_with_tuples_saves_and_loads(tmp_path):
    _, model, x = converted("squeezenet1_1")
    tr = mg.trace(model, x[:1], 3, mode="deconvnet")
    back = mg.Trace.load(tr.save(tmp_path / "t.npz"))
    cat = back["features.3.cat"]
    assert isinstance(cat.signal_out, tuple) and len(cat.signal_out) == 2
    assert tr.diff(back, rtol=0) is None


def test_receptive_fields_on_graphs_are_the_impulse_support():
    """A unit's footprint is exactly where its gradient can be non-zero: with all-positive weights
    and inputs every path is live, so the support of the vanilla signal is the footprint."""
    g = mg.Graph()
    a = g.call("a", mg.Conv2d(1, 2, 3, padding=1), mg.INPUT)
    b = g.call("b", mg.Conv2d(1, 2, 5, stride=1, padding=2, dilation=1), mg.INPUT)
    s = g.call("s", mg.Add(), a, b)
    p = g.call("p", mg.AvgPool2d(2), s)  # average: every tap of a window gets signal
    c = g.call("c", mg.Conv2d(2, 1, 3, padding=1), p)
    d = g.call("d", mg.Conv2d(2, 1, 1, stride=1), p)
    g.call("cat", mg.Cat(1), c, d)
    for _, layer in g.unique_leaves():
        if layer.named_parameters():
            layer.weight = np.abs(layer.weight) + 0.1
            layer.bias = np.abs(layer.bias)
    x = np.random.default_rng(0).uniform(1, 2, (1, 1, 12, 12))
    rf = mg.receptive_field(g, "cat", x.shape)
    # a|b: start -2, size 5 (the union of 3 at -1 and 5 at -2); pool: size 6, jump 2; c: size 10 at -4,
    # d: size 6 at -2; the concatenation sees their union
    assert rf.size == (10, 10) and rf.jump == (2, 2) and rf.start == (-4, -4)
    out, _ = g.forward(x)
    for y, xx in ((0, 0), (2, 3), (5, 5)):
        seed = np.zeros_like(out)
        seed[0, 0, y, xx] = 1
        support = mg.backprop(g, x, seed, "vanilla")[0, 0] != 0
        rows, cols = rf.footprint(y, xx)
        assert np.array_equal(support, rows[:, None] & cols[None, :])
        (r0, r1), (c0, c1) = rf.box(y, xx)
        assert support[r0:r1, c0:c1].sum() == support.sum()


def test_resnet_receptive_field_and_projection_from_a_block():
    model = mg.zoo.resnet18()
    rf = mg.receptive_field(model, "layer1", (64, 64))
    # conv1 (7, stride 2, pad 3), maxpool (3, 2, 1), then four 3x3 convolutions at stride 4
    assert rf.jump == (4, 4) and rf.size == (7 + 2 * 2 + 4 * 2 * 4,) * 2 and rf.start == (-3 - 2 - 4 * 4,) * 2
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    found = mg.projections(model, x, "layer1", channel=5, k=2)
    assert len(found) == 2 and all(np.abs(p.signal).sum() > 0 for p in found)
    for p in found:
        (r0, r1), (c0, c1) = p.box
        inside = np.zeros(p.signal.shape[1:], bool)
        inside[r0:r1, c0:c1] = True
        assert not p.signal[:, ~inside].any()


# ----------------------------------------------------------------------- the command line

@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_explain_runs_on_a_torchvision_checkpoint(name, tmp_path, capsys):
    from PIL import Image

    from minigbp.cli import main

    torch.manual_seed(0)
    t = randomize_batchnorm(getattr(torchvision.models, name)(), seed=3)
    torch.save(t.state_dict(), tmp_path / f"{name}.pth")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    out_dir = tmp_path / "out"
    code = main(["explain", str(tmp_path / "photo.png"), "--model", name, "--weights", str(tmp_path / f"{name}.pth"),
                 "--mode", "all", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    # the predicted classes are torch's own on the same preprocessed input
    x = mg.image.get_preprocessing("imagenet").preprocess(mg.image.load_image(str(tmp_path / "photo.png")))
    with torch.no_grad():
        top = t.eval()(torch.from_numpy(x)).numpy()[0].argsort()[::-1][:3]
    assert f"predicted {top[0]} (" in out and f", {top[1]} (" in out
    for method in ("vanilla", "deconvnet", "guided", "gradcam", "guided-gradcam"):
        with Image.open(out_dir / f"photo_{method}.png") as im:
            assert np.asarray(im.convert("L"), dtype=np.float64).std() > 1
    assert (out_dir / "photo_comparison.png").is_file()


def test_convert_command_checks_and_stores_graph_architectures(tmp_path, capsys):
    from minigbp.cli import main

    t, model, x = converted("densenet121")
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".relu2.", ".relu.2."): v for k, v in t.state_dict().items()}
    torch.save(legacy, tmp_path / "densenet121.pth")
    assert main(["convert", str(tmp_path / "densenet121.pth"), str(tmp_path / "d.npz"), "--arch", "densenet121"]) == 0
    assert "densenet121 architecture included" in capsys.readouterr().out
    back = mg.load(tmp_path / "d.npz")
    assert isinstance(back, mg.Graph) and np.array_equal(back(x), model(x))
    # the wrong architecture: every problem listed, nothing written
    assert main(["convert", str(tmp_path / "densenet121.pth"), str(tmp_path / "r.npz"), "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "missing key 'conv1.weight'" in err and "unexpected key 'features.conv0.weight'" in err
    assert not (tmp_path / "r.npz").exists()


def test_block_targets_in_explain_and_backprop_agree():
    _, model, x = converted("densenet121")
    a = mg.explain.attribute(model, x, "layer:features.denseblock4", mode="guided")
    out, _ = model.forward(x, upto="features.denseblock4")
    b = mg.backprop(model, x, np.ones_like(out), "guided", layer="features.denseblock4")
    assert out.shape == (2, 1024, 2, 2) and np.array_equal(a, b) and np.abs(a).max() > 0
    _, resnet, x = converted("resnet18")
    seed = np.zeros((2, 512, 2, 2))
    seed[:, 3] = 1
    assert np.array_equal(mg.explain.attribute(resnet, x, "channel:layer4:3", mode="vanilla"),
                          mg.backprop(resnet, x, seed, "vanilla", layer="layer4"))
