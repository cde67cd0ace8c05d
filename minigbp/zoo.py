"""Architectures with torchvision's exact module structure and state-dict names.

``vgg11``, ``vgg13``, ``vgg16``, ``vgg19`` and ``alexnet`` are laid out as
torchvision builds them (``features.N``, ``avgpool``, ``classifier.N``), so a
torchvision checkpoint loads without renaming:

>>> model = vgg16("vgg16-397923af.pth")          # doctest: +SKIP

torchvision flattens inside ``forward``; here that step is an explicit
``Flatten`` child named ``"flatten"`` between ``avgpool`` and ``classifier``. It
has no parameters, so the state-dict keys are unchanged.

``digits()`` is a small CNN trained on scikit-learn's 8x8 handwritten digits, shipped
with the package (see ``examples/train_digits.py``).
"""

import os

from .layers import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from .model import Sequential
from .weights import load_weights

__all__ = ["vgg11", "vgg13", "vgg16", "vgg19", "alexnet", "ARCHITECTURES", "build"]

# torchvision.models.vgg.cfgs: channel counts, "M" = 2x2 max pooling
VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def _with_weights(model, weights):
    """Load ``weights`` (a path or a dict of arrays) into ``model`` if given."""
    if weights is not None:
        if isinstance(weights, (str, os.PathLike)):
            weights = load_weights(weights)
        model.load_state_dict(weights)
    return model


def _vgg(name, weights=None, num_classes=1000):
    layers, c = [], 3
    for v in VGG_CONFIGS[name]:
        if v == "M":
            layers.append(MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [Conv2d(c, v, kernel_size=3, padding=1), ReLU(inplace=True)]
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


ARCHITECTURES = {"vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16, "vgg19": vgg19, "alexnet": alexnet}


def build(name, weights=None):
    """An architecture by name (``"vgg16"``, ``"alexnet"``, ...), optionally with weights."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](weights)
