"""The zoo's VGG and AlexNet against torchvision's module structure, written out in torch.

torchvision is not importable here, so ``TorchVGG`` and ``TorchAlexNet`` below copy
torchvision.models.vgg / alexnet by hand: the same ``features`` / ``avgpool`` /
``classifier`` children, ``ReLU(inplace=True)``, ``Dropout`` and (for VGG) the same
weight initialization. The zoo must produce exactly torchvision's state-dict keys,
in order, with the same shapes, and the same logits in float64; a real checkpoint
written by ``torch.save`` must load through ``zoo.vgg16(weights=path)`` in a process
where torch cannot be imported.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minigbp as mg

torch = pytest.importorskip("torch")
nn = torch.nn

ROOT = Path(__file__).resolve().parents[1]

# torchvision.models.vgg.cfgs
CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def make_layers(cfg):
    """torchvision.models.vgg.make_layers (batch_norm=False)."""
    layers, in_channels = [], 3
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


class TorchVGG(nn.Module):
    """torchvision.models.vgg.VGG, init_weights=True, dropout=0.5."""

    def __init__(self, features, num_classes=1000):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class TorchAlexNet(nn.Module):
    """torchvision.models.alexnet.AlexNet, dropout=0.5 (torch's default init)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def torch_model(name, num_classes=1000):
    if name == "alexnet":
        return TorchAlexNet(num_classes)
    return TorchVGG(make_layers(CFGS[name]), num_classes)


def seeded_float64(name, seed=0):
    """The torch model with seeded random weights, float64, eval mode.

    (Initialized in float32 and then converted: torch draws float64 normals ~3x slower.)
    """
    torch.manual_seed(seed)
    return torch_model(name).double().eval()


@pytest.fixture(scope="module")
def vgg16_float64():
    """One seeded float64 VGG16 (~1.1 GB) shared by the tests that need real weights."""
    return seeded_float64("vgg16")


@pytest.fixture
def zero_init(monkeypatch):
    """Fresh minigbp layers start from (lazily allocated) zeros instead of random numbers.

    These tests look at names and shapes, or load real weights right away; drawing VGG's
    138M random initial values would cost seconds of memory traffic per model.
    """
    monkeypatch.setattr(mg.layers, "_uniform", lambda shape, fan_in: np.zeros(shape, np.float32))


def pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def numpy_state_dict(net):
    """The state dict as float64 arrays sharing torch's memory (no copy)."""
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


# ---------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19", "alexnet"])
def test_structure_matches_torchvision(name, zero_init):
    """Same state-dict keys in the same order with the same shapes, and leaf by leaf the
    same layer types with the same hyperparameters (plus our parameter-free Flatten)."""
    with torch.device("meta"):  # shapes only: no memory, no init
        net = torch_model(name)
    reference = net.state_dict()
    model = mg.zoo.build(name)
    ours = model.state_dict()
    assert list(ours) == list(reference)
    assert [v.shape for v in ours.values()] == [tuple(v.shape) for v in reference.values()]
    assert all(v.dtype == np.float32 for v in ours.values())

    leaves = [(n, m) for n, m in net.named_modules() if not list(m.children())]
    mine = [(n, m) for n, m in model.named_leaves() if n != "flatten"]
    assert [n for n, _ in mine] == [n for n, _ in leaves]
    assert [n for n, _ in model.named_leaves()].index("flatten") == len(model["features"]) + 1
    for (n, a), (_, b) in zip(mine, leaves):
        assert type(a).__name__ == type(b).__name__, n
        if isinstance(b, nn.Conv2d):
            assert (a.kernel_size, a.stride, a.padding) == (b.kernel_size, b.stride, b.padding), n
        elif isinstance(b, nn.MaxPool2d):
            assert (a.kernel_size, a.stride) == (pair(b.kernel_size), pair(b.stride)), n
            assert (a.padding, a.ceil_mode) == (pair(b.padding), b.ceil_mode), n
        elif isinstance(b, nn.AdaptiveAvgPool2d):
            assert a.output_size == pair(b.output_size), n
        elif isinstance(b, nn.Dropout):
            assert a.p == b.p, n


def test_num_classes_changes_only_the_last_layer(zero_init):
    with torch.device("meta"):
        reference = torch_model("alexnet", num_classes=10).state_dict()
    ours = mg.zoo.alexnet(num_classes=10).state_dict()
    assert list(ours) == list(reference)
    assert [v.shape for v in ours.values()] == [tuple(v.shape) for v in reference.values()]
    assert ours["classifier.6.weight"].shape == (10, 4096)


def test_build_rejects_unknown_names():
    with pytest.raises(ValueError, match="vgg16"):
        mg.zoo.build("resnet9")


# ---------------------------------------------------------------------------------------
# logits, float64
# ---------------------------------------------------------------------------------------

# smallest interesting sizes: VGG 64x64 -> 2x2 features, adaptive pooling to 7x7 with
# overlapping bins; AlexNet 95x95 -> 23 -> 11 -> 11 -> 5 -> 5 -> 2 -> 6x6
SIZES = {"vgg16": 64, "alexnet": 95}


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_logits_match_torch_float64(name, request, zero_init):
    net = request.getfixturevalue("vgg16_float64") if name == "vgg16" else seeded_float64(name)
    x = np.random.default_rng(1).standard_normal((1, 3, SIZES[name], SIZES[name]))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model = getattr(mg.zoo, name)(weights=numpy_state_dict(net))
    assert all(a.dtype == np.float64 for a in model.state_dict().values())
    logits = model(x)
    assert logits.dtype == np.float64 and logits.shape == (1, 1000)
    assert np.abs(expected).max() > 1e-3  # the comparison is not between two near-zero vectors
    np.testing.assert_allclose(logits, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


def test_alexnet_vanilla_input_gradient_matches_autograd(zero_init):
    net = seeded_float64("alexnet", seed=3)
    x = np.random.default_rng(2).standard_normal((2, 3, 67, 67))
    xt = torch.from_numpy(x).requires_grad_(True)
    net(xt)[:, 7].sum().backward()
    model = mg.zoo.alexnet(weights=numpy_state_dict(net))
    g = mg.backprop(model, x, target=7, mode="vanilla")
    expected = xt.grad.numpy()
    np.testing.assert_allclose(g, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------
# a real checkpoint, read in a process without torch
# ---------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any "import torch" now raises ImportError
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import minigbp as mg

    checkpoint, inputs, outputs = sys.argv[2:5]
    model = mg.zoo.vgg16(weights=checkpoint)
    x = np.load(inputs)["x"]
    np.savez(outputs, logits=model(x),
             dtypes=np.array(sorted({str(a.dtype) for a in model.state_dict().values()})),
             torch_loaded=np.array("torch" in sys.modules and sys.modules["torch"] is not None))
""")


def test_vgg16_checkpoint_file_loads_without_torch(tmp_path, vgg16_float64):
    net = vgg16_float64
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    checkpoint = tmp_path / "vgg16.pth"
    torch.save(net.state_dict(), checkpoint)
    np.savez(tmp_path / "x.npz", x=x)

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), str(checkpoint), str(tmp_path / "x.npz"),
         str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert not out["torch_loaded"]
        assert list(out["dtypes"]) == ["float64"]
        logits = out["logits"]
    assert logits.dtype == np.float64 and logits.shape == (2, 1000)
    np.testing.assert_allclose(logits, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
