"""``digits()``: a small CNN trained on scikit-learn's 8x8 handwritten digits, shipped with the
package with its held-out test split, so minigbp explains a real trained model offline,
with neither torch nor scikit-learn (``examples/train_digits.py`` wrote both files).
"""

import importlib.resources

import numpy as np

from ..layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from ..sequential import Sequential
from .image import digits_preprocess  # noqa: F401 (the model's preprocessing, also mg.zoo.digits_preprocess)
from .weights import load

__all__ = ["digits", "digits_test_data", "digits_preprocess"]


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
    return importlib.resources.files("minigbp").joinpath("data").joinpath(name)


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
