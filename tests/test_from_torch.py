"""from_torch: torch modules to minigbp models (names, weights, dtypes, the flatten of
torchvision's layout, checked custom forwards) and the errors for what it cannot convert."""

import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import minigbp as mg
from minigbp.io.pytorch import ConversionError, from_torch, infer_input_shape

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def run_torch(module, x):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x)).numpy()


def data(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class TinyVGG(nn.Module):
    """torchvision's layout: features / avgpool / classifier, forward flattens in between."""

    def __init__(self, inplace=True):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(inplace), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(54, 12), nn.ReLU(inplace), nn.Linear(12, 5))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class LeNetLike(nn.Module):
    """Children applied in order, with a reshape in forward before the first Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


class FunctionalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


# ----------------------------------------------------------------------- conversion

def test_nested_sequential_names_weights_and_outputs():
    torch.manual_seed(0)
    t = nn.Sequential(OrderedDict([
        ("features", nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1), nn.ReLU(),
                                   nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                   nn.Conv2d(4, 4, (1, 3), padding=(0, 1), bias=False),
                                   nn.AvgPool2d(2, count_include_pad=False, padding=1))),
        ("flat", nn.Flatten()),
        ("head", nn.Sequential(nn.Linear(4 * 4 * 4, 6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 3))),
    ])).double()
    model = from_torch(t)
    assert [n for n, _ in model.named_leaves()] == [n for n, m in t.named_modules() if not m._modules]
    ours, theirs = model.state_dict(), t.state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert ours[k].dtype == np.float64 and np.array_equal(ours[k], theirs[k].numpy())
    x = data((2, 2, 13, 13))
    np.testing.assert_allclose(model(x), run_torch(t, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("tdtype, dtype, want", [
    ("float32", None, np.float32), ("float64", None, np.float64),
    ("float32", np.float64, np.float64), ("float64", np.float32, np.float32), ("float16", None, np.float32),
])
def test_dtypes_are_kept_or_cast(tdtype, dtype, want):
    t = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)).to(getattr(torch, tdtype))
    model = from_torch(t, dtype=dtype)
    assert {v.dtype for v in model.state_dict().values()} == {np.dtype(want)}


def test_weights_are_copies():
    t = nn.Sequential(nn.Linear(3, 2))
    model = from_torch(t)
    with torch.no_grad():
        t[0].weight.zero_()
    assert np.abs(model.state_dict()["0.weight"]).sum() > 0


def test_torchvision_layout_gets_a_flatten_and_keeps_torch_names():
    torch.manual_seed(1)
    t = TinyVGG()
    model = from_torch(t)
    assert list(model.children) == ["features", "avgpool", "flatten", "classifier"]
    assert isinstance(model["flatten"], mg.Flatten)
    assert list(model.state_dict()) == list(t.state_dict())
    x = data((3, 3, 12, 12), dtype=np.float32)
    np.testing.assert_allclose(model(x), run_torch(t, x), rtol=1e-5, atol=1e-6)
    assert model["features.1"].inplace  # the flag is carried over (and harmless in minigbp)


def test_children_in_order_with_a_reshape_convert():
    torch.manual_seed(2)
    t = LeNetLike().double()
    model = from_torch(t)
    assert [n for n, _ in model.named_leaves()] == ["conv", "relu", "pool", "flatten", "fc"]
    x = data((2, 1, 8, 8))
    np.testing.assert_allclose(model(x), run_torch(t, x), rtol=0, atol=1e-12)


def test_training_mode_is_left_alone():
    t = TinyVGG().train()
    from_torch(t)
    assert t.training and t.classifier[0].training


def test_shared_module_used_twice():
    relu = nn.ReLU()
    t = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu).double()
    model = from_torch(t)
    assert [n for n, _ in model.named_leaves()] == ["0", "1", "2", "3"]
    x = data((4, 3))
    np.testing.assert_allclose(model(x), run_torch(t, x), atol=1e-12)


def test_single_layer_becomes_a_one_layer_sequential():
    model = from_torch(nn.Conv2d(1, 2, 3))
    assert isinstance(model, mg.Sequential) and list(model.state_dict()) == ["0.weight", "0.bias"]


def test_from_torch_does_not_touch_the_init_seed():
    mg.manual_seed(3)
    a = mg.Linear(4, 4).weight
    mg.manual_seed(3)
    from_torch(TinyVGG())
    b = mg.Linear(4, 4).weight
    assert np.array_equal(a, b)


def test_infer_input_shape():
    assert infer_input_shape(from_torch(TinyVGG())) == (2, 3, 16, 16)
    assert infer_input_shape(from_torch(LeNetLike())) == (2, 1, 8, 8)
    assert infer_input_shape(from_torch(nn.Sequential(nn.Linear(7, 2)))) == (2, 7)


# --------------------------------------------------------------------------- errors

class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 4, 4]), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Sigmoid())

    def forward(self, x):
        return self.head(torch.tanh(self.features(x)))


def test_unsupported_calls_are_all_named_with_name_op_and_source_line():
    with pytest.raises(ConversionError) as e:
        from_torch(Unsupported())
    msg = str(e.value)
    assert "3 unsupported call(s)" in msg
    assert "'features.1' (torch.nn.modules.normalization.LayerNorm): no minigbp layer for this module" in msg
    assert "'head.2' (torch.nn.modules.activation.Sigmoid)" in msg
    assert "node 'tanh' (call_function tanh): no minigbp layer for this call at test_from_torch.py:" in msg
    assert "return self.head(torch.tanh(self.features(x)))" in msg  # the source line
    assert "supported functions: F.relu" in msg and isinstance(e.value, ValueError)


def test_subclass_of_a_supported_layer_is_not_trusted():
    class MyReLU(nn.ReLU):
        def forward(self, x):
            return x.clamp(min=0.1)

    with pytest.raises(ConversionError, match=r"'1' \(.*MyReLU\)"):
        from_torch(nn.Sequential(nn.Linear(2, 2), MyReLU()))


@pytest.mark.parametrize("layer, words", [
    (nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
    (nn.MaxPool2d(2, return_indices=True), "return_indices"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor_override"),
    (nn.Conv2d(1, 1, 4, padding="same"), "asymmetric padding"),
])
def test_unsupported_options_name_the_layer(layer, words):
    with pytest.raises(ConversionError) as e:
        from_torch(nn.Sequential(nn.Dropout(), layer))
    assert "'1'" in str(e.value) and words in str(e.value)


def test_functional_relu_in_forward_converts_and_is_marked():
    torch.manual_seed(4)
    t = FunctionalReLU().double()
    model = from_torch(t)
    assert isinstance(model, mg.Sequential)  # conv, relu, flatten, fc: a chain
    assert [n for n, _ in model.named_leaves()] == ["conv", "relu", "flatten", "fc"]
    assert model["relu"].functional and not mg.ReLU().functional
    x = data((2, 2, 6, 6))
    np.testing.assert_allclose(model(x), run_torch(t, x), rtol=0, atol=1e-12)


def test_custom_block_inside_a_sequential_becomes_a_graph():
    torch.manual_seed(5)
    t = nn.Sequential(nn.Conv2d(3, 3, 1), Residual(), nn.ReLU()).double()
    model = from_torch(t)
    assert isinstance(model, mg.Graph) and not isinstance(model, mg.Sequential)
    assert [(n.name, type(n.layer).__name__, n.inputs) for n in model.nodes] == [
        ("0", "Conv2d", ("input",)), ("1.conv", "Conv2d", ("0",)), ("1.add", "Add", ("0", "1.conv")),
        ("2", "ReLU", ("1.add",))]
    assert list(model.state_dict()) == list(t.state_dict())
    x = data((2, 3, 5, 5))
    np.testing.assert_allclose(model(x), run_torch(t, x), rtol=0, atol=1e-12)


def test_a_forward_that_reads_a_tensor_after_changing_it_in_place_is_refused():
    class Aliased(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x):
            h = self.conv(x)
            y = F.relu(h, inplace=True)  # h is now relu(h) too
            return y + h

    with pytest.raises(ConversionError, match="node 'add' computes a different value"):
        from_torch(Aliased(), example_input=np.zeros((1, 2, 4, 4)))


def test_not_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        from_torch(mg.Sequential(mg.ReLU()))


def test_minigbp_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import minigbp, minigbp.verify, minigbp.verify.testing, minigbp.io.pytorch, minigbp.cli\n"
            "minigbp.cli.build_parser()\n"
            "try:\n"
            "    minigbp.io.pytorch.from_torch(object())\n"
            "except ImportError as e:\n"
            "    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ImportError minigbp.from_torch needs PyTorch" in out


def test_zero_padding_in_all_modes():
    """nn.ZeroPad2d (asymmetric) converts to ZeroPad2d; forward, vanilla (autograd) and the guided
    and deconvnet rules at every ReLU (:func:`torch_helpers.every_relu`) agree in float64."""
    from torch_helpers import autograd_signal, every_relu

    torch.manual_seed(0)
    module = nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(2, 4, 3, stride=2), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)).double().eval()
    model = from_torch(module)
    assert type(model[0]).__name__ == "ZeroPad2d" and model[0].padding == (1, 0, 2, 1)
    x = data((2, 2, 9, 8))
    np.testing.assert_allclose(model(x), run_torch(module, x), rtol=1e-12, atol=1e-12)
    seed = np.zeros((2, 3))
    seed[[0, 1], [2, 0]] = 1
    for mode in ("vanilla", "guided", "deconvnet"):
        if mode == "vanilla":
            want = autograd_signal(module, x, seed)
        else:
            with every_relu(mode):
                want = autograd_signal(module, x, seed)
        got = mg.backprop(model, x, seed, mode)
        assert np.abs(want).max() > 0 and mg.rel_error(got, want) < 1e-12, mode


def test_global_max_is_amax_ties_shared():
    """GlobalMaxPool2d is the reduction torch.amax: tied maxima share the signal (forward and
    backward against autograd, ties on purpose)."""
    x = np.array([[[[1.0, 3.0, 3.0], [0.0, 3.0, -1.0]], [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]]])
    tx = torch.tensor(x, requires_grad=True)
    out = tx.amax(dim=(2, 3), keepdim=True)
    dout = np.array([[[[6.0]], [[-3.0]]]])
    out.backward(torch.from_numpy(dout))
    layer = mg.GlobalMaxPool2d()
    got, cache = layer.forward(x)
    np.testing.assert_array_equal(got, out.detach().numpy())
    for mode in ("vanilla", "deconvnet", "guided"):
        np.testing.assert_allclose(layer.backward(dout, cache, mode), tx.grad.numpy(), rtol=1e-15)
    assert np.count_nonzero(tx.grad.numpy()[0, 0]) == 3
