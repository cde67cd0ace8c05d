"""Grad-CAM and guided Grad-CAM against Captum (``LayerGradCam``, ``GuidedGradCam``), and the
``upsample`` convention that tells the libraries apart.

Captum's ``GuidedGradCam`` is its guided backprop times ``LayerGradCam(relu_attributions=True)``
upsampled by ``LayerAttribution.interpolate``, nearest neighbour by default; minigbp's
``preset="captum"`` sets ``upsample="nearest"`` (and Captum's ReLU scope). The first test
replays Captum's own test of ``GuidedGradCam`` (tests/attr/test_guided_grad_cam.py,
``test_simple_input_conv``): its model and its literal expected map.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import minigbp as mg  # noqa: E402
from minigbp import explain as E  # noqa: E402
from torch_helpers import randomize_batchnorm  # noqa: E402

nn, F = torch.nn, torch.nn.functional
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")

#: Captum's test: BasicModel_ConvNet_One_Conv, input arange(16) as 1x1x4x4, target 0, layer relu1
CAPTUM_EXPECTED = [[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 12.0, 8.0], [28.0, 84.0, 97.5, 65.0], [28.0, 56.0, 65.0, 32.5]]


def test_captum_guided_gradcam_literal_expectation():
    from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv

    net = BasicModel_ConvNet_One_Conv().double()
    model = mg.from_torch(net)  # forward(x, x2=None) converts as forward(x)
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    for kwargs in ({"upsample": "nearest"}, {"preset": "captum"}):
        got = E.attribute(model, x, 0, mode="guided-gradcam", gradcam_layer="relu1", **kwargs)
        np.testing.assert_allclose(got[0, 0], CAPTUM_EXPECTED, rtol=0, atol=0.01)
    theirs = captum_attr.GuidedGradCam(net, net.relu1).attribute(torch.tensor(x), target=0)
    np.testing.assert_allclose(got, theirs.detach().numpy(), rtol=0, atol=1e-12)
    # bilinear upsampling (the default) is a different map
    assert np.abs(E.attribute(model, x, 0, mode="guided-gradcam", gradcam_layer="relu1") - got).max() > 1


class Net(nn.Module):
    """A small CNN with BatchNorm, a residual block and a 4x4 map to upsample."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        h = self.pool(self.pool(self.relu(self.bn1(self.conv1(x)))))  # (N, 6, 4, 4)
        h = self.relu2(h + self.conv2(h))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


@pytest.mark.parametrize("seed", range(4))
def test_gradcam_equals_captum_layer_gradcam_and_guided_gradcam(seed):
    torch.manual_seed(seed)
    net = randomize_batchnorm(Net(), seed).double().eval()
    model = mg.from_torch(net)
    x = np.random.default_rng(seed).standard_normal((3, 3, 16, 16))
    xt = torch.tensor(x)
    with torch.no_grad():
        targets = net(xt).argmax(dim=1)
    layer_cam = captum_attr.LayerGradCam(net, net.relu2).attribute(xt, target=targets, relu_attributions=True)
    for upsample in ("nearest", "bilinear"):
        theirs = captum_attr.LayerAttribution.interpolate(layer_cam, (16, 16), interpolate_mode=upsample)
        ours = E.gradcam(model, x, targets.numpy(), "relu2", upsample=upsample)
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=0, atol=1e-12 * np.abs(ours).max())
    assert np.array_equal(E.attribute(model, x, targets.numpy(), "gradcam", gradcam_layer="relu2", preset="captum"),
                          E.gradcam(model, x, targets.numpy(), "relu2", upsample="nearest"))
    theirs = captum_attr.GuidedGradCam(net, net.relu2).attribute(xt, target=targets).detach().numpy()
    ours = E.attribute(model, x, targets.numpy(), "guided-gradcam", gradcam_layer="relu2", preset="captum")
    assert np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12 * np.abs(theirs).max())
