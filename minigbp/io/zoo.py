"""Architectures with torchvision's exact module structure and state-dict names.

Every model here is laid out as torchvision builds it, so a torchvision checkpoint loads
as downloaded, without renaming:

>>> model = resnet50("resnet50-0676ba61.pth")          # doctest: +SKIP

* ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``, their ``*_bn`` variants and ``alexnet``:
  chains (:class:`minigbp.Sequential`: ``features.N``, ``avgpool``, ``classifier.N``);
* ``resnet18/34/50/101/152``, ``densenet121/161/169/201``, ``squeezenet1_0/1_1``: graphs
  (:class:`minigbp.Graph`), with the node names :func:`minigbp.from_torch` gives the
  torchvision model: ``layer1.0.add`` for a residual addition, ``layer1.0.relu@1`` for the
  block's second call of its ``relu`` module, ``features.denseblock1.denselayer1.cat``, and
  ``relu`` for the function call ``F.relu`` that DenseNet applies after ``features.norm5``
  (``ReLU(functional=True)``).

torchvision flattens inside ``forward``; here that step is an explicit ``Flatten`` node
named ``"flatten"`` (before ``classifier`` or ``fc``). It has no parameters, so the
state-dict keys are unchanged. BatchNorm layers keep their running statistics under
torchvision's names; checkpoints' ``num_batches_tracked`` entries are accepted, and
DenseNet checkpoints saved with the old key names (``denselayer1.norm.1.weight`` for
``denselayer1.norm1.weight``) are renamed on load, as torchvision does.

``digits()`` is a small CNN trained on scikit-learn's 8x8 handwritten digits, shipped
with the package (:mod:`minigbp.io.digits`; see ``examples/train_digits.py``).
"""

import os
import re

from ..layers import (Add, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Cat, Conv2d, Dropout, Flatten, Linear,
                     MaxPool2d, ReLU)
from ..model import INPUT, Graph
from ..sequential import Sequential
from .digits import digits, digits_preprocess, digits_test_data  # noqa: F401 (the shipped model, here too)
from .weights import load_weights

__all__ = ["vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "alexnet",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "densenet121", "densenet161", "densenet169", "densenet201", "squeezenet1_0", "squeezenet1_1",
           "ARCHITECTURES", "build", "checkpoint_keys", "densenet_legacy_keys", "digits", "digits_test_data", "digits_preprocess"]

# torchvision.models.vgg.cfgs: channel counts, "M" = 2x2 max pooling
VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def _with_weights(model, weights, rename=None):
    """Load ``weights`` (a path or a dict of arrays, renamed by ``rename`` if given) into ``model``."""
    if weights is not None:
        if isinstance(weights, (str, os.PathLike)):
            weights = load_weights(weights)
        model.load_state_dict(rename(weights) if rename else weights)
    return model


def _vgg(name, weights=None, num_classes=1000, batch_norm=False):
    layers, c = [], 3
    for v in VGG_CONFIGS[name]:
        if v == "M":
            layers.append(MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [Conv2d(c, v, kernel_size=3, padding=1)] + ([BatchNorm2d(v)] if batch_norm else [])
            layers.append(ReLU(inplace=True))
            c = v
    model = Sequential(
        features=Sequential(*layers),
        avgpool=AdaptiveAvgPool2d((7, 7)),
        flatten=Flatten(),
        classifier=Sequential(
            Linear(512 * 7 * 7, 4096), ReLU(True), Dropout(),
            Linear(4096, 4096), ReLU(True), Dropout(),
            Linear(4096, num_classes),
        ),
    )
    return _with_weights(model, weights)


def vgg11(weights=None, num_classes=1000):
    """VGG11 (configuration "A"), torchvision layout; ``weights``: path or dict."""
    return _vgg("vgg11", weights, num_classes)


def vgg13(weights=None, num_classes=1000):
    """VGG13 (configuration "B"), torchvision layout; ``weights``: path or dict."""
    return _vgg("vgg13", weights, num_classes)


def vgg16(weights=None, num_classes=1000):
    """VGG16 (configuration "D"), torchvision layout; ``weights``: path or dict.

    ``features.28`` is the last convolution (Keras's ``block5_conv3``), ``features.29``
    its ReLU, ``features.30`` the last pooling.
    """
    return _vgg("vgg16", weights, num_classes)


def vgg19(weights=None, num_classes=1000):
    """VGG19 (configuration "E"), torchvision layout; ``weights``: path or dict."""
    return _vgg("vgg19", weights, num_classes)


def vgg11_bn(weights=None, num_classes=1000):
    """VGG11 with batch normalization after every convolution, torchvision layout."""
    return _vgg("vgg11", weights, num_classes, batch_norm=True)


def vgg13_bn(weights=None, num_classes=1000):
    """VGG13 with batch normalization after every convolution, torchvision layout."""
    return _vgg("vgg13", weights, num_classes, batch_norm=True)


def vgg16_bn(weights=None, num_classes=1000):
    """VGG16 with batch normalization after every convolution, torchvision layout
    (``features.40`` is the last convolution, ``features.42`` its ReLU)."""
    return _vgg("vgg16", weights, num_classes, batch_norm=True)


def vgg19_bn(weights=None, num_classes=1000):
    """VGG19 with batch normalization after every convolution, torchvision layout."""
    return _vgg("vgg19", weights, num_classes, batch_norm=True)


def alexnet(weights=None, num_classes=1000):
    """AlexNet as torchvision builds it (the one-GPU variant); ``weights``: path or dict."""
    model = Sequential(
        features=Sequential(
            Conv2d(3, 64, kernel_size=11, stride=4, padding=2), ReLU(inplace=True),
            MaxPool2d(kernel_size=3, stride=2),
            Conv2d(64, 192, kernel_size=5, padding=2), ReLU(inplace=True),
            MaxPool2d(kernel_size=3, stride=2),
            Conv2d(192, 384, kernel_size=3, padding=1), ReLU(inplace=True),
            Conv2d(384, 256, kernel_size=3, padding=1), ReLU(inplace=True),
            Conv2d(256, 256, kernel_size=3, padding=1), ReLU(inplace=True),
            MaxPool2d(kernel_size=3, stride=2),
        ),
        avgpool=AdaptiveAvgPool2d((6, 6)),
        flatten=Flatten(),
        classifier=Sequential(
            Dropout(), Linear(256 * 6 * 6, 4096), ReLU(inplace=True),
            Dropout(), Linear(4096, 4096), ReLU(inplace=True),
            Linear(4096, num_classes),
        ),
    )
    return _with_weights(model, weights)


# ------------------------------------------------------------------------------- ResNet

def _basic_block(g, name, x, inplanes, planes, stride):
    """torchvision's BasicBlock: two 3x3 convolutions, then ``out += identity``, then ReLU."""
    relu = ReLU(inplace=True)  # one module, called twice: nodes "<name>.relu" and "<name>.relu@1"
    h = g.call(f"{name}.conv1", Conv2d(inplanes, planes, 3, stride, 1, bias=False), x)
    h = g.call(f"{name}.bn1", BatchNorm2d(planes), h)
    h = g.call(f"{name}.relu", relu, h)
    h = g.call(f"{name}.conv2", Conv2d(planes, planes, 3, 1, 1, bias=False), h)
    h = g.call(f"{name}.bn2", BatchNorm2d(planes), h)
    identity = _downsample(g, name, x, inplanes, planes, stride)
    h = g.call(f"{name}.add", Add(), h, identity)
    return g.call(f"{name}.relu", relu, h)


def _bottleneck(g, name, x, inplanes, planes, stride):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3 convolution): 1x1, 3x3, 1x1 (4x wider)."""
    relu = ReLU(inplace=True)  # called three times: relu, relu@1, relu@2
    h = g.call(f"{name}.conv1", Conv2d(inplanes, planes, 1, bias=False), x)
    h = g.call(f"{name}.bn1", BatchNorm2d(planes), h)
    h = g.call(f"{name}.relu", relu, h)
    h = g.call(f"{name}.conv2", Conv2d(planes, planes, 3, stride, 1, bias=False), h)
    h = g.call(f"{name}.bn2", BatchNorm2d(planes), h)
    h = g.call(f"{name}.relu", relu, h)
    h = g.call(f"{name}.conv3", Conv2d(planes, planes * 4, 1, bias=False), h)
    h = g.call(f"{name}.bn3", BatchNorm2d(planes * 4), h)
    identity = _downsample(g, name, x, inplanes, planes * 4, stride)
    h = g.call(f"{name}.add", Add(), h, identity)
    return g.call(f"{name}.relu", relu, h)


def _downsample(g, name, x, inplanes, outplanes, stride):
    """The skip connection: ``x`` itself, or a strided 1x1 convolution + BatchNorm when the shape changes."""
    if stride == 1 and inplanes == outplanes:
        return x
    x = g.call(f"{name}.downsample.0", Conv2d(inplanes, outplanes, 1, stride, bias=False), x)
    return g.call(f"{name}.downsample.1", BatchNorm2d(outplanes), x)


def _resnet(block, counts, weights=None, num_classes=1000):
    expansion = 4 if block is _bottleneck else 1
    g = Graph()
    h = g.call("conv1", Conv2d(3, 64, 7, 2, 3, bias=False), INPUT)
    h = g.call("bn1", BatchNorm2d(64), h)
    h = g.call("relu", ReLU(inplace=True), h)
    h = g.call("maxpool", MaxPool2d(3, 2, 1), h)
    inplanes = 64
    for i, (planes, count) in enumerate(zip((64, 128, 256, 512), counts)):
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            h = block(g, f"layer{i + 1}.{j}", h, inplanes, planes, stride)
            inplanes = planes * expansion
    h = g.call("avgpool", AdaptiveAvgPool2d((1, 1)), h)
    h = g.call("flatten", Flatten(), h)
    g.call("fc", Linear(512 * expansion, num_classes), h)
    return _with_weights(g, weights)


def resnet18(weights=None, num_classes=1000):
    """ResNet-18 (He et al. 2016), torchvision layout: BasicBlocks (2, 2, 2, 2); ``weights``: path or dict.

    ``layer4`` (its last node, ``layer4.1.relu@1``) is the last feature map, 512 x 7 x 7 at 224.
    """
    return _resnet(_basic_block, (2, 2, 2, 2), weights, num_classes)


def resnet34(weights=None, num_classes=1000):
    """ResNet-34, torchvision layout: BasicBlocks (3, 4, 6, 3)."""
    return _resnet(_basic_block, (3, 4, 6, 3), weights, num_classes)


def resnet50(weights=None, num_classes=1000):
    """ResNet-50, torchvision layout: Bottlenecks (3, 4, 6, 3); ``layer4`` ends in 2048 x 7 x 7 at 224."""
    return _resnet(_bottleneck, (3, 4, 6, 3), weights, num_classes)


def resnet101(weights=None, num_classes=1000):
    """ResNet-101, torchvision layout: Bottlenecks (3, 4, 23, 3)."""
    return _resnet(_bottleneck, (3, 4, 23, 3), weights, num_classes)


def resnet152(weights=None, num_classes=1000):
    """ResNet-152, torchvision layout: Bottlenecks (3, 8, 36, 3)."""
    return _resnet(_bottleneck, (3, 8, 36, 3), weights, num_classes)


# ----------------------------------------------------------------------------- DenseNet

#: (growth rate, layers per dense block, initial features), torchvision.models.densenet
DENSENET_CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


def checkpoint_keys(name, state_dict):
    """``state_dict`` with the key names architecture ``name`` uses: DenseNet checkpoints with
    old key names are renamed (:func:`densenet_legacy_keys`); anything else is returned as is."""
    return densenet_legacy_keys(state_dict) if name.startswith("densenet") else state_dict


def densenet_legacy_keys(state_dict):
    """DenseNet checkpoints as torchvision publishes them use ``denselayer1.norm.1.weight`` for
    ``denselayer1.norm1.weight`` (the names of an older torchvision); rename them, as
    ``torchvision.models.densenet._load_state_dict`` does. Other keys are kept."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
                         r"running_var|num_batches_tracked))$")
    out = {}
    for key, value in state_dict.items():
        m = pattern.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def _dense_block(g, name, h, layers, features, growth, bn_size=4):
    """Each dense layer reads the concatenation of the block's input and every earlier layer's
    output: BN-ReLU-1x1 conv (``bn_size * growth`` channels), BN-ReLU-3x3 conv (``growth``)."""
    made = [h]
    for i in range(1, layers + 1):
        layer = f"{name}.denselayer{i}"
        x = g.call(f"{layer}.cat", Cat(1), *made)
        x = g.call(f"{layer}.norm1", BatchNorm2d(features + (i - 1) * growth), x)
        x = g.call(f"{layer}.relu1", ReLU(inplace=True), x)
        x = g.call(f"{layer}.conv1", Conv2d(features + (i - 1) * growth, bn_size * growth, 1, bias=False), x)
        x = g.call(f"{layer}.norm2", BatchNorm2d(bn_size * growth), x)
        x = g.call(f"{layer}.relu2", ReLU(inplace=True), x)
        made.append(g.call(f"{layer}.conv2", Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False), x))
    return g.call(f"{name}.cat", Cat(1), *made)


def _densenet(name, weights=None, num_classes=1000):
    growth, blocks, features = DENSENET_CONFIGS[name]
    g = Graph()
    h = g.call("features.conv0", Conv2d(3, features, 7, 2, 3, bias=False), INPUT)
    h = g.call("features.norm0", BatchNorm2d(features), h)
    h = g.call("features.relu0", ReLU(inplace=True), h)
    h = g.call("features.pool0", MaxPool2d(3, 2, 1), h)
    for i, layers in enumerate(blocks):
        h = _dense_block(g, f"features.denseblock{i + 1}", h, layers, features, growth)
        features += layers * growth
        if i != len(blocks) - 1:
            t = f"features.transition{i + 1}"
            h = g.call(f"{t}.norm", BatchNorm2d(features), h)
            h = g.call(f"{t}.relu", ReLU(inplace=True), h)
            h = g.call(f"{t}.conv", Conv2d(features, features // 2, 1, bias=False), h)
            h = g.call(f"{t}.pool", AvgPool2d(2, 2), h)
            features //= 2
    h = g.call("features.norm5", BatchNorm2d(features), h)
    h = g.call("relu", ReLU(inplace=True, functional=True), h)  # F.relu in DenseNet.forward
    h = g.call("adaptive_avg_pool2d", AdaptiveAvgPool2d((1, 1)), h)
    h = g.call("flatten", Flatten(), h)
    g.call("classifier", Linear(features, num_classes), h)
    return _with_weights(g, weights, lambda sd: checkpoint_keys(name, sd))


def densenet121(weights=None, num_classes=1000):
    """DenseNet-121 (Huang et al. 2017), torchvision layout; ``weights``: path or dict (old key names too).

    ``features.denseblock4`` (its last node, the concatenation) is the last dense block; ``relu``
    is the functional ReLU after ``features.norm5``, which hook-based libraries do not see.
    """
    return _densenet("densenet121", weights, num_classes)


def densenet161(weights=None, num_classes=1000):
    """DenseNet-161, torchvision layout (growth rate 48)."""
    return _densenet("densenet161", weights, num_classes)


def densenet169(weights=None, num_classes=1000):
    """DenseNet-169, torchvision layout."""
    return _densenet("densenet169", weights, num_classes)


def densenet201(weights=None, num_classes=1000):
    """DenseNet-201, torchvision layout."""
    return _densenet("densenet201", weights, num_classes)


# ---------------------------------------------------------------------------- SqueezeNet

def _fire(g, name, h, inplanes, squeeze, expand1x1, expand3x3):
    """A Fire module: a 1x1 squeeze, then 1x1 and 3x3 expansions side by side, concatenated."""
    h = g.call(f"{name}.squeeze", Conv2d(inplanes, squeeze, 1), h)
    h = g.call(f"{name}.squeeze_activation", ReLU(inplace=True), h)
    a = g.call(f"{name}.expand1x1", Conv2d(squeeze, expand1x1, 1), h)
    a = g.call(f"{name}.expand1x1_activation", ReLU(inplace=True), a)
    b = g.call(f"{name}.expand3x3", Conv2d(squeeze, expand3x3, 3, padding=1), h)
    b = g.call(f"{name}.expand3x3_activation", ReLU(inplace=True), b)
    return g.call(f"{name}.cat", Cat(1), a, b)


def _squeezenet(version, weights=None, num_classes=1000):
    g = Graph()
    if version == "1_0":
        stem, plan = Conv2d(3, 96, 7, stride=2), [96, "M", 16, 16, 32, "M", 32, 48, 48, 64, "M", 64]
    else:
        stem, plan = Conv2d(3, 64, 3, stride=2), [64, "M", 16, 16, "M", 32, 32, "M", 48, 48, 64, 64]
    h = g.call("features.0", stem, INPUT)
    h = g.call("features.1", ReLU(inplace=True), h)
    channels, i = plan[0], 2
    for v in plan[1:]:  # "M": 3x3 max pooling, stride 2, ceil mode; a number: a Fire module squeezing to it
        if v == "M":
            h = g.call(f"features.{i}", MaxPool2d(3, 2, ceil_mode=True), h)
        else:
            h = _fire(g, f"features.{i}", h, channels, v, 4 * v, 4 * v)
            channels = 8 * v
        i += 1
    h = g.call("classifier.0", Dropout(0.5), h)
    h = g.call("classifier.1", Conv2d(512, num_classes, 1), h)
    h = g.call("classifier.2", ReLU(inplace=True), h)
    h = g.call("classifier.3", AdaptiveAvgPool2d((1, 1)), h)
    g.call("flatten", Flatten(), h)
    return _with_weights(g, weights)


def squeezenet1_0(weights=None, num_classes=1000):
    """SqueezeNet 1.0 (Iandola et al. 2016), torchvision layout: Fire modules, ceil-mode pooling,
    a 1x1 convolution to the classes and global average pooling."""
    return _squeezenet("1_0", weights, num_classes)


def squeezenet1_1(weights=None, num_classes=1000):
    """SqueezeNet 1.1, torchvision layout (2.4x less computation than 1.0)."""
    return _squeezenet("1_1", weights, num_classes)


ARCHITECTURES = {
    "vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16, "vgg19": vgg19, "vgg11_bn": vgg11_bn, "vgg13_bn": vgg13_bn,
    "vgg16_bn": vgg16_bn, "vgg19_bn": vgg19_bn, "alexnet": alexnet,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101, "resnet152": resnet152,
    "densenet121": densenet121, "densenet161": densenet161, "densenet169": densenet169, "densenet201": densenet201,
    "squeezenet1_0": squeezenet1_0, "squeezenet1_1": squeezenet1_1,
}


def build(name, weights=None):
    """An architecture by name (``"vgg16"``, ``"resnet50"``, ...), optionally with weights."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](weights)
