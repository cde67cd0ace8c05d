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

import importlib.resources
import os

import numpy as np

from .image import bilinear_matrix
from .layers import AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from .model import Sequential
from .weights import load, load_weights

__all__ = ["vgg11", "vgg13", "vgg16", "vgg19", "alexnet", "ARCHITECTURES", "build",
           "digits", "digits_test_data", "digits_preprocess"]

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


# ---------------------------------------------------------------------------------------
# digits: a small CNN trained on scikit-learn's 8x8 handwritten digits, shipped with the package
# ---------------------------------------------------------------------------------------

DIGITS_SIZE = 32  # side of the network's input: the 8x8 digits are upsampled 4x


def _digits_architecture():
    """The ``digits`` network with fresh parameters (PyTorch's default initialization).

    ``features``: three blocks Conv(3x3, padding 1) - ReLU - MaxPool(2), with 16, 32, 32
    channels (32x32 -> 16x16 -> 8x8 -> 4x4); ``classifier``: Linear(512, 64) - ReLU -
    Linear(64, 10). 47,530 parameters.
    """
    return Sequential(
        features=Sequential(
            Conv2d(1, 16, kernel_size=3, padding=1), ReLU(), MaxPool2d(kernel_size=2),
            Conv2d(16, 32, kernel_size=3, padding=1), ReLU(), MaxPool2d(kernel_size=2),
            Conv2d(32, 32, kernel_size=3, padding=1), ReLU(), MaxPool2d(kernel_size=2),
        ),
        flatten=Flatten(),
        classifier=Sequential(
            Linear(32 * 4 * 4, 64), ReLU(),
            Linear(64, 10),
        ),
    )


def _digits_file(name):
    """A file shipped in ``minigbp/data`` (an ``importlib.resources`` traversable)."""
    return importlib.resources.files(__package__).joinpath("data").joinpath(name)


def digits(pretrained=True):
    """A small CNN for scikit-learn's 8x8 handwritten digits (10 classes).

    Parameters
    ----------
    pretrained : bool, default True
        True: the trained model shipped as ``minigbp/data/digits.npz`` (written by
        ``examples/train_digits.py``; at least 97% accuracy on :func:`digits_test_data`).
        False: the same architecture with fresh parameters (``mg.manual_seed`` makes them
        reproducible).

    Returns
    -------
    Sequential
        Input ``(N, 1, 32, 32)`` float32/float64 as made by :func:`digits_preprocess`;
        output ``(N, 10)`` logits, one per digit 0..9. Layers: ``features`` (three blocks
        Conv2d(3x3, padding 1) - ReLU - MaxPool2d(2) with 16, 32, 32 channels, so
        ``features.6`` is the last convolution), ``flatten``, ``classifier``
        (Linear(512, 64) - ReLU - Linear(64, 10)).

    Examples
    --------
    >>> import minigbp as mg
    >>> model = mg.zoo.digits()
    >>> images, labels = mg.zoo.digits_test_data()
    >>> x = mg.zoo.digits_preprocess(images[:4])           # (4, 1, 32, 32) float32
    >>> model(x).shape
    (4, 10)
    >>> mg.backprop(model, x, target=labels[:4], mode="guided").shape
    (4, 1, 32, 32)
    """
    if not pretrained:
        return _digits_architecture()
    with importlib.resources.as_file(_digits_file("digits.npz")) as path:
        if not path.exists():
            raise FileNotFoundError(f"{path}: the trained digits model is missing from this "
                                    f"installation; run examples/train_digits.py to write it")
        return load(path)


def digits_test_data():
    """The held-out test split the shipped :func:`digits` model never saw in training.

    A fixed, stratified 20% of ``sklearn.datasets.load_digits()`` (chosen by
    ``examples/train_digits.py``), shipped as ``minigbp/data/digits_test.npz`` so no
    scikit-learn is needed.

    Returns
    -------
    images : ndarray (N, 8, 8) uint8
        Raw pixel values 0..16 (feed them through :func:`digits_preprocess`).
    labels : ndarray (N,) int64
        The digit 0..9 each image shows.
    """
    with importlib.resources.as_file(_digits_file("digits_test.npz")) as path:
        with np.load(path, allow_pickle=False) as npz:
            return npz["images"].astype(np.uint8), npz["labels"].astype(np.int64)


def digits_preprocess(images):
    """Turn raw 8x8 digits (values 0..16) into the :func:`digits` model's input.

    Parameters
    ----------
    images : array_like (N, 8, 8) or (8, 8), any real numeric dtype
        Pixel values in 0..16, as ``sklearn.datasets.load_digits().images`` and
        :func:`digits_test_data` give them.

    Returns
    -------
    ndarray (N, 1, 32, 32) float32
        (``N = 1`` for a single ``(8, 8)`` image.)

    Raises
    ------
    ValueError
        ``images`` is not shaped ``(N, 8, 8)`` or ``(8, 8)``, or holds values outside
        [0, 16] (or NaN).
    TypeError
        ``images`` is not real-valued numbers (bool, complex, strings, objects).

    Notes
    -----
    Each image is scaled to [0, 1] and upsampled 4x by bilinear interpolation with
    ``align_corners=False`` (what ``torch.nn.functional.interpolate(x, size=(32, 32),
    mode="bilinear", align_corners=False)`` computes), written as one matrix product:

    .. math:: \\mathrm{out} = A \\, (\\mathrm{img} / 16) \\, A^T

    where ``A`` is the ``(32, 8)`` 1-D interpolation matrix of
    :func:`minigbp.image.bilinear_matrix`: row ``i`` samples the input at
    ``s_i = max((i + 1/2) / 4 - 1/2, 0)`` and holds ``1 - (s_i - floor(s_i))`` at column
    ``floor(s_i)`` and ``s_i - floor(s_i)`` at column ``min(floor(s_i) + 1, 7)``. Bilinear
    interpolation is separable, so interpolating the rows (``A @ img``) and then the
    columns (``@ A.T``) is the 2-D operation. The training script
    (``examples/train_digits.py``) calls this very function, so training and inference
    see identical inputs.
    """
    x = np.asarray(images)
    if x.dtype.kind not in "iuf":
        raise TypeError(f"digits_preprocess: expected real numbers (pixel values 0..16), "
                        f"got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (8, 8):
        raise ValueError(f"digits_preprocess: expected images of shape (N, 8, 8) or (8, 8), "
                         f"got shape {np.shape(images)}")
    x = x.astype(np.float64)
    bad = ~((x >= 0) & (x <= 16))  # NaN is bad too
    if bad.any():
        raise ValueError(f"digits_preprocess: pixel values must lie in [0, 16] (raw load_digits "
                         f"values); got {x[bad][0]} (and {bad.sum() - 1} more outside)")
    a = bilinear_matrix(8, DIGITS_SIZE)  # (32, 8)
    out = a @ (x / 16.0) @ a.T  # (32, 8) @ (N, 8, 8) @ (8, 32) -> (N, 32, 32)
    return out[:, None].astype(np.float32)
